// openrealtime playground: a microphone conversation over WebRTC with the server.
//
// The page never holds an API key after sign-in: the server keeps a cookie session and mints a
// short-lived ek_ key per call (POST /playground/session), which authenticates the SDP offer on
// /v1/realtime/calls. Events travel on the "oai-events" data channel; output audio is an RTP track.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_LOG_ENTRIES = 3000;
  const MAX_LOG_ROWS = 600;
  const TRANSCRIPTION_MODEL = "whisper-1";
  const EXAMPLE_TOOLS = [
    {
      type: "function",
      name: "get_weather",
      description: "Current weather for a city.",
      parameters: {
        type: "object",
        properties: { city: { type: "string", description: "City name, e.g. Paris" } },
        required: ["city"],
      },
    },
  ];

  // Everything a test (or a curious developer) may want to look at.
  const state = {
    pc: null,
    dc: null,
    stream: null,
    session: null,
    events: [],
    latencies: [],
    timings: { clickAt: null, sessionCreatedMs: null, connectedMs: null },
    pendingTurnStart: null,
    responseActive: false,
    responseQueued: false,
    settingsChangedWhileConnecting: false,
    toolCalls: new Map(),
    turns: new Map(),
    defaults: null,
  };
  window.__playground = state;

  // ------------------------------------------------------------------ HTTP

  async function api(path, { method = "GET", body } = {}) {
    const headers = { "X-Playground": "1" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = new Error(data?.error?.message || `${method} ${path} failed (${response.status})`);
      error.status = response.status;
      error.code = data?.error?.code;
      throw error;
    }
    return data;
  }

  // ------------------------------------------------------------------ views

  function show(view) {
    for (const id of ["loading-view", "signin-view", "app-view"]) $(id).hidden = id !== view;
    $("logout").hidden = view !== "app-view";
  }

  function setStatus(kind, text) {
    const status = $("status");
    status.dataset.state = kind;
    status.querySelector("span").textContent = text;
  }

  async function boot() {
    applyTheme(localStorage.getItem("playground-theme"));
    wireControls();
    try {
      const me = await api("/playground/me");
      await enterApp(me);
    } catch (error) {
      if (error.status === 401) {
        show("signin-view");
        $("api-key").focus();
      } else {
        show("signin-view");
        showSigninError(error.message);
      }
    }
  }

  async function enterApp(me) {
    state.defaults = me.defaults || null;
    if (state.defaults && !$("instructions").value) $("instructions").value = state.defaults.instructions || "";
    show("app-view");
    await loadVoices();
  }

  function showSigninError(message) {
    const node = $("signin-error");
    node.textContent = message;
    node.hidden = !message;
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    if (!key) return;
    $("signin-submit").disabled = true;
    showSigninError("");
    try {
      await api("/playground/login", { method: "POST", body: { api_key: key } });
      input.value = "";
      const me = await api("/playground/me");
      await enterApp(me);
    } catch (error) {
      showSigninError(error.status === 401 ? "That key is not valid on this server." : error.message);
    } finally {
      input.value = "";
      $("signin-submit").disabled = false;
    }
  }

  async function signOut() {
    stop();
    try {
      await api("/playground/logout", { method: "POST" });
    } finally {
      show("signin-view");
    }
  }

  async function loadVoices() {
    const select = $("voice");
    const wanted = select.value || state.defaults?.audio?.output?.voice || "alloy";
    try {
      const voices = await api("/playground/voices");
      select.replaceChildren();
      for (const voice of voices.data) {
        const option = document.createElement("option");
        option.value = voice.name;
        const engine = voice.engine ? ` · ${voice.engine}` : "";
        option.textContent = `${voice.name}${engine}`;
        option.title = voice.description || "";
        select.append(option);
      }
      if (!voices.data.length) throw new Error("no voices");
      select.value = [...select.options].some((o) => o.value === wanted) ? wanted : select.options[0].value;
    } catch (error) {
      if (error.status === 401) return show("signin-view");
      select.replaceChildren(new Option(wanted, wanted));
    }
  }

  // ------------------------------------------------------------------ settings → session config

  function turnDetection() {
    const mode = document.querySelector('input[name="turn"]:checked').value;
    if (mode === "off") return null;
    if (mode === "semantic_vad") return { type: "semantic_vad", eagerness: $("eagerness").value };
    return {
      type: "server_vad",
      silence_duration_ms: Number($("silence").value),
      threshold: Number($("threshold").value),
    };
  }

  function parseTools() {
    const text = $("tools").value.trim();
    const errorNode = $("tools-error");
    let tools = [];
    try {
      tools = text ? JSON.parse(text) : [];
      if (!Array.isArray(tools)) throw new Error("Tools must be a JSON array.");
      for (const tool of tools) {
        if (!tool || typeof tool !== "object" || tool.type !== "function" || typeof tool.name !== "string") {
          throw new Error('Each tool needs "type": "function" and a "name".');
        }
      }
    } catch (error) {
      errorNode.textContent = error instanceof SyntaxError ? `Invalid JSON: ${error.message}` : error.message;
      errorNode.hidden = false;
      return null;
    }
    errorNode.hidden = true;
    return tools;
  }

  function sessionConfig() {
    return {
      type: "realtime",
      model: "gpt-realtime",
      instructions: $("instructions").value,
      tools: parseTools() || [],
      audio: {
        input: { transcription: { model: TRANSCRIPTION_MODEL }, turn_detection: turnDetection() },
        output: { voice: $("voice").value || "alloy" },
      },
    };
  }

  function syncTurnControls() {
    const mode = document.querySelector('input[name="turn"]:checked').value;
    $("server-vad-options").hidden = mode !== "server_vad";
    $("semantic-options").hidden = mode !== "semantic_vad";
    $("manual-hint").hidden = mode !== "off";
    $("respond").hidden = mode !== "off";
    $("silence-out").textContent = `${$("silence").value} ms`;
    $("threshold-out").textContent = Number($("threshold").value).toFixed(2);
  }

  function settingsNote(text) {
    $("settings-state").textContent = text;
  }

  function sendUpdate(partial, what) {
    if (!isOpen()) {
      if ($("start").dataset.state === "connecting") state.settingsChangedWhileConnecting = true;
      return;
    }
    send({ type: "session.update", session: { type: "realtime", ...partial } });
    settingsNote(`Updating ${what}…`);
  }

  // ------------------------------------------------------------------ the call

  function isOpen() {
    return state.dc !== null && state.dc.readyState === "open";
  }

  function send(event) {
    if (!isOpen()) return false;
    state.dc.send(JSON.stringify(event));
    logEvent("out", event);
    return true;
  }

  function setCallState(kind) {
    const button = $("start");
    button.dataset.state = kind;
    button.querySelector(".call-label").textContent =
      kind === "live" ? "End conversation" : kind === "connecting" ? "Connecting…" : "Start conversation";
    button.disabled = kind === "connecting";
    $("mute").disabled = kind !== "live";
    $("respond").disabled = kind !== "live";
  }

  async function waitForIceGathering(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function start() {
    if (state.pc) return stop();
    if (!navigator.mediaDevices?.getUserMedia) {
      notice("The microphone needs a secure page: open the playground over https or on localhost.", true);
      return;
    }
    const tools = parseTools();
    if (tools === null) {
      notice("Fix the tools JSON before starting.", true);
      return;
    }
    state.timings = { clickAt: performance.now(), sessionCreatedMs: null, connectedMs: null };
    $("connect-time").textContent = "–";
    state.pendingTurnStart = null;
    state.responseActive = false;
    state.settingsChangedWhileConnecting = false;
    setCallState("connecting");
    setStatus("connecting", "Connecting…");
    try {
      const minted = await api("/playground/session", { method: "POST", body: { session: sessionConfig() } });
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      state.stream = stream;
      const pc = new RTCPeerConnection();
      state.pc = pc;
      pc.addEventListener("track", (event) => {
        const remote = event.streams[0] || new MediaStream([event.track]);
        $("remote-audio").srcObject = remote;
        attachMeter(remote, "meter-assistant");
      });
      pc.addEventListener("connectionstatechange", () => {
        if (pc !== state.pc) return;
        if (pc.connectionState === "failed") {
          notice("The media connection failed.", true);
          stop("error");
        } else if (pc.connectionState === "closed") {
          stop();
        }
      });
      for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
      attachMeter(stream, "meter-user");
      const dc = pc.createDataChannel("oai-events");
      state.dc = dc;
      dc.addEventListener("message", (message) => onServerEvent(message.data));
      dc.addEventListener("open", () => {
        state.timings.connectedMs = Math.round(performance.now() - state.timings.clickAt);
      });
      dc.addEventListener("close", () => {
        if (state.dc === dc) stop();
      });

      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      await waitForIceGathering(pc, 2000);
      const response = await fetch("/v1/realtime/calls", {
        method: "POST",
        body: pc.localDescription.sdp,
        headers: { Authorization: `Bearer ${minted.value}`, "Content-Type": "application/sdp" },
      });
      const answer = await response.text();
      if (!response.ok) {
        let message = `The server refused the call (${response.status}).`;
        try {
          message = JSON.parse(answer).error.message || message;
        } catch {
          /* not JSON: keep the generic message */
        }
        throw new Error(message);
      }
      if (state.pc !== pc) return;
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      document.querySelector(".empty-state")?.remove();
    } catch (error) {
      notice(error.message || String(error), true);
      if (error.status === 401) {
        stop();
        return show("signin-view");
      }
      stop("error");
    }
  }

  function stop(kind = "idle") {
    const { pc, dc, stream } = state;
    state.pc = null;
    state.dc = null;
    state.stream = null;
    try {
      dc?.close();
    } catch {
      /* already closed */
    }
    try {
      pc?.close();
    } catch {
      /* already closed */
    }
    for (const track of stream?.getTracks() || []) track.stop();
    $("remote-audio").srcObject = null;
    stopMeters();
    state.responseActive = false;
    state.responseQueued = false;
    setCallState("idle");
    $("mute").setAttribute("aria-pressed", "false");
    $("mute").textContent = "Mute";
    if (kind === "error") setStatus("error", "Disconnected");
    else setStatus("idle", "Not connected");
    for (const turn of state.turns.values()) turn.node.classList.remove("pending", "listening");
  }

  function toggleMute() {
    if (!state.stream) return;
    const muted = $("mute").getAttribute("aria-pressed") !== "true";
    for (const track of state.stream.getAudioTracks()) track.enabled = !muted;
    $("mute").setAttribute("aria-pressed", String(muted));
    $("mute").textContent = muted ? "Unmute" : "Mute";
  }

  function respondNow() {
    state.pendingTurnStart = performance.now();
    send({ type: "input_audio_buffer.commit" });
    requestResponse();
  }

  function requestResponse() {
    if (state.responseActive) {
      state.responseQueued = true;
      return;
    }
    state.responseActive = true;
    send({ type: "response.create" });
  }

  // ------------------------------------------------------------------ server events

  function onServerEvent(raw) {
    let event;
    try {
      event = JSON.parse(raw);
    } catch {
      return;
    }
    logEvent("in", event);
    switch (event.type) {
      case "session.created":
        state.session = event.session;
        if (state.timings.sessionCreatedMs === null && state.timings.clickAt !== null) {
          state.timings.sessionCreatedMs = Math.round(performance.now() - state.timings.clickAt);
          $("connect-time").textContent = formatMs(state.timings.sessionCreatedMs);
        }
        setCallState("live");
        setStatus("live", "Live");
        notice("Connected. Start talking.");
        if (state.settingsChangedWhileConnecting) {
          state.settingsChangedWhileConnecting = false;
          const { type, model, ...changes } = sessionConfig();
          sendUpdate(changes, "settings");
        }
        break;
      case "session.updated":
        state.session = event.session;
        settingsNote("Saved");
        setTimeout(() => settingsNote(""), 1500);
        break;
      case "input_audio_buffer.speech_started":
        state.pendingTurnStart = null; // a new turn: the previous one got no spoken reply
        userTurn(event.item_id).node.classList.add("listening");
        break;
      case "input_audio_buffer.speech_stopped":
        state.pendingTurnStart = performance.now();
        userTurn(event.item_id).node.classList.replace("listening", "pending");
        break;
      case "input_audio_buffer.committed":
        userTurn(event.item_id).node.classList.replace("listening", "pending");
        break;
      case "conversation.item.input_audio_transcription.delta": {
        const turn = userTurn(event.item_id);
        turn.text += event.delta || "";
        setBubble(turn, turn.text);
        break;
      }
      case "conversation.item.input_audio_transcription.completed": {
        const turn = userTurn(event.item_id);
        turn.text = (event.transcript || "").trim();
        turn.node.classList.remove("pending", "listening");
        setBubble(turn, turn.text || "(no speech recognised)");
        break;
      }
      case "conversation.item.input_audio_transcription.failed": {
        const turn = userTurn(event.item_id);
        turn.node.classList.remove("pending", "listening");
        turn.node.classList.add("failed");
        setBubble(turn, "(transcription failed)");
        break;
      }
      case "response.created":
        state.responseActive = true;
        break;
      case "output_audio_buffer.started":
        markReply(event.response_id);
        break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta": {
        markReply(event.response_id);
        const turn = assistantTurn(event.item_id);
        turn.text += event.delta || "";
        setBubble(turn, turn.text);
        break;
      }
      case "response.output_audio_transcript.done":
      case "response.output_text.done": {
        const turn = assistantTurn(event.item_id);
        turn.text = event.transcript ?? event.text ?? turn.text;
        turn.node.classList.remove("pending");
        setBubble(turn, turn.text);
        break;
      }
      case "response.function_call_arguments.done":
        showToolCall({ call_id: event.call_id, name: event.name, arguments: event.arguments });
        break;
      case "response.output_item.done":
        if (event.item?.type === "function_call") showToolCall(event.item);
        break;
      case "response.done":
        state.responseActive = false;
        for (const turn of state.turns.values()) {
          if (turn.role === "assistant") turn.node.classList.remove("pending");
        }
        if (event.response?.status === "failed") {
          notice(event.response.status_details?.error?.message || "The response failed.", true);
        }
        if (state.responseQueued) {
          state.responseQueued = false;
          requestResponse();
        }
        break;
      case "error":
        notice(event.error?.message || "Error", true);
        settingsNote("");
        break;
      default:
        break;
    }
  }

  function markReply(responseId) {
    if (state.pendingTurnStart === null) return;
    const ms = Math.round(performance.now() - state.pendingTurnStart);
    state.pendingTurnStart = null;
    state.latencies.push({ ms, responseId: responseId || null });
    renderLatency();
  }

  // ------------------------------------------------------------------ transcript

  function transcriptNode() {
    document.querySelector(".empty-state")?.remove();
    return $("transcript");
  }

  function scrollTranscript() {
    const node = $("transcript");
    const nearBottom = node.scrollHeight - node.scrollTop - node.clientHeight < 160;
    if (nearBottom) node.scrollTop = node.scrollHeight;
  }

  function makeTurn(key, role) {
    const node = document.createElement("div");
    node.className = `turn ${role}`;
    node.dataset.role = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    node.append(who, bubble);
    transcriptNode().append(node);
    const turn = { key, role, node, bubble, text: "" };
    state.turns.set(key, turn);
    scrollTranscript();
    return turn;
  }

  function userTurn(itemId) {
    const key = `user:${itemId || "current"}`;
    return state.turns.get(key) || makeTurn(key, "user");
  }

  function assistantTurn(itemId) {
    const key = `assistant:${itemId || "current"}`;
    const existing = state.turns.get(key);
    if (existing) return existing;
    const turn = makeTurn(key, "assistant");
    turn.node.classList.add("pending");
    const last = state.latencies[state.latencies.length - 1];
    if (last && !last.tagged) {
      last.tagged = true;
      const tag = document.createElement("span");
      tag.className = "latency-tag";
      tag.textContent = `replied after ${formatMs(last.ms)}`;
      turn.node.append(tag);
    }
    return turn;
  }

  function setBubble(turn, text) {
    turn.bubble.textContent = text;
    scrollTranscript();
  }

  function notice(text, isError = false) {
    const node = document.createElement("div");
    node.className = isError ? "notice error" : "notice";
    node.textContent = text;
    transcriptNode().append(node);
    scrollTranscript();
  }

  function showToolCall(call) {
    if (!call?.call_id || state.toolCalls.has(call.call_id)) return;
    state.pendingTurnStart = null; // this turn was answered with a tool call, not speech
    const fragment = $("tool-call-template").content.cloneNode(true);
    const node = fragment.querySelector(".tool-call");
    node.dataset.callId = call.call_id;
    node.querySelector(".tool-name").textContent = call.name || "(unnamed)";
    let args = call.arguments || "";
    try {
      args = JSON.stringify(JSON.parse(args), null, 2);
    } catch {
      /* show the raw text */
    }
    node.querySelector(".tool-args").textContent = args || "{}";
    node.querySelector(".tool-status").textContent = "waiting for your result";
    const form = node.querySelector(".tool-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const output = node.querySelector(".tool-result").value.trim() || "{}";
      const sent = send({
        type: "conversation.item.create",
        item: { type: "function_call_output", call_id: call.call_id, output },
      });
      if (!sent) return;
      requestResponse();
      node.classList.add("answered");
      node.querySelector(".tool-status").textContent = `result sent: ${output}`;
    });
    state.toolCalls.set(call.call_id, node);
    transcriptNode().append(node);
    scrollTranscript();
    node.querySelector(".tool-result").focus({ preventScroll: true });
  }

  // ------------------------------------------------------------------ latency

  function median(values) {
    if (!values.length) return null;
    const sorted = [...values].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[mid] : Math.round((sorted[mid - 1] + sorted[mid]) / 2);
  }

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : `${ms} ms`;
  }

  function renderLatency() {
    const values = state.latencies.map((entry) => entry.ms);
    $("latency-last").textContent = formatMs(values[values.length - 1] ?? null);
    $("latency-median").textContent = formatMs(median(values));
    const list = $("latency-list");
    const top = Math.max(...values, 1);
    list.replaceChildren(
      ...state.latencies
        .map((entry, index) => {
          const row = document.createElement("li");
          const label = document.createElement("span");
          label.textContent = `turn ${index + 1}`;
          const track = document.createElement("span");
          const bar = document.createElement("span");
          bar.className = "bar";
          bar.style.width = `${Math.max(4, (entry.ms / top) * 100)}%`;
          bar.style.display = "block";
          track.append(bar);
          const value = document.createElement("span");
          value.className = "ms";
          value.textContent = formatMs(entry.ms);
          row.append(label, track, value);
          return row;
        })
        .reverse(),
    );
  }

  // ------------------------------------------------------------------ level meters

  let audioContext = null;
  const meters = [];

  function attachMeter(stream, nodeId) {
    try {
      audioContext = audioContext || new AudioContext();
      if (audioContext.state === "suspended") audioContext.resume();
      const source = audioContext.createMediaStreamSource(stream);
      const analyser = audioContext.createAnalyser();
      analyser.fftSize = 512;
      source.connect(analyser);
      meters.push({ analyser, source, node: $(nodeId), data: new Float32Array(analyser.fftSize) });
      if (meters.length === 1) requestAnimationFrame(drawMeters);
    } catch {
      /* meters are decoration; the call works without them */
    }
  }

  function drawMeters() {
    if (!meters.length) return;
    for (const meter of meters) {
      meter.analyser.getFloatTimeDomainData(meter.data);
      let sum = 0;
      for (const sample of meter.data) sum += sample * sample;
      const rms = Math.sqrt(sum / meter.data.length);
      const level = Math.min(1, Math.max(0, (20 * Math.log10(rms + 1e-9) + 60) / 60));
      meter.node.style.width = `${Math.round(level * 100)}%`;
    }
    requestAnimationFrame(drawMeters);
  }

  function stopMeters() {
    for (const meter of meters.splice(0)) {
      meter.source.disconnect();
      meter.node.style.width = "0";
    }
  }

  // ------------------------------------------------------------------ event log

  function isDelta(type) {
    return type.endsWith(".delta");
  }

  function logVisible(entry) {
    const filter = $("log-filter").value.trim().toLowerCase();
    if ($("log-hide-deltas").checked && isDelta(entry.event.type || "")) return false;
    return !filter || (entry.event.type || "").toLowerCase().includes(filter);
  }

  function logRow(entry) {
    const row = document.createElement("li");
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    const time = document.createElement("span");
    time.className = "t";
    time.textContent = `${(entry.at / 1000).toFixed(2)}s`;
    const dir = document.createElement("span");
    dir.className = `dir ${entry.dir}`;
    dir.textContent = entry.dir === "in" ? "↓" : "↑";
    dir.title = entry.dir === "in" ? "from the server" : "to the server";
    const type = document.createElement("span");
    type.className = entry.event.type === "error" ? "type error" : "type";
    type.textContent = entry.event.type || "(no type)";
    summary.append(time, dir, type);
    details.append(summary);
    details.addEventListener(
      "toggle",
      () => {
        if (details.open && !details.querySelector("pre")) {
          const pre = document.createElement("pre");
          pre.textContent = JSON.stringify(entry.event, null, 2);
          details.append(pre);
        }
      },
      { once: false },
    );
    row.append(details);
    return row;
  }

  function logEvent(dir, event) {
    const origin = state.timings.clickAt ?? 0;
    const entry = { dir, event, at: performance.now() - origin };
    state.events.push(entry);
    if (state.events.length > MAX_LOG_ENTRIES) state.events.splice(0, state.events.length - MAX_LOG_ENTRIES);
    $("log-count").textContent = String(state.events.length);
    if (!logVisible(entry)) return;
    const list = $("log");
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(logRow(entry));
    while (list.childElementCount > MAX_LOG_ROWS) list.firstElementChild.remove();
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function renderLog() {
    const rows = state.events.filter(logVisible).slice(-MAX_LOG_ROWS).map(logRow);
    $("log").replaceChildren(...rows);
    $("log").scrollTop = $("log").scrollHeight;
  }

  // ------------------------------------------------------------------ theme, wiring

  function applyTheme(theme) {
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
  }

  function toggleTheme() {
    const current =
      document.documentElement.dataset.theme ||
      (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
    const next = current === "dark" ? "light" : "dark";
    localStorage.setItem("playground-theme", next);
    applyTheme(next);
  }

  function wireControls() {
    $("signin-form").addEventListener("submit", signIn);
    $("logout").addEventListener("click", signOut);
    $("theme-toggle").addEventListener("click", toggleTheme);
    $("start").addEventListener("click", () => start());
    $("mute").addEventListener("click", toggleMute);
    $("respond").addEventListener("click", respondNow);

    $("voice").addEventListener("change", () =>
      sendUpdate({ audio: { output: { voice: $("voice").value } } }, "voice"),
    );
    $("instructions").addEventListener("change", () =>
      sendUpdate({ instructions: $("instructions").value }, "instructions"),
    );
    for (const radio of document.querySelectorAll('input[name="turn"]')) {
      radio.addEventListener("change", () => {
        syncTurnControls();
        sendUpdate({ audio: { input: { turn_detection: turnDetection() } } }, "turn detection");
      });
    }
    for (const id of ["silence", "threshold"]) {
      $(id).addEventListener("input", syncTurnControls);
      $(id).addEventListener("change", () =>
        sendUpdate({ audio: { input: { turn_detection: turnDetection() } } }, "turn detection"),
      );
    }
    $("eagerness").addEventListener("change", () =>
      sendUpdate({ audio: { input: { turn_detection: turnDetection() } } }, "turn detection"),
    );
    $("tools").addEventListener("input", () => parseTools());
    $("tools").addEventListener("change", () => {
      const tools = parseTools();
      if (tools !== null) sendUpdate({ tools }, "tools");
    });
    $("tools-example").addEventListener("click", () => {
      $("tools").value = JSON.stringify(EXAMPLE_TOOLS, null, 2);
      $("tools").dispatchEvent(new Event("change"));
      parseTools();
    });

    $("log-filter").addEventListener("input", renderLog);
    $("log-hide-deltas").addEventListener("change", renderLog);
    $("log-clear").addEventListener("click", () => {
      state.events.length = 0;
      $("log-count").textContent = "0";
      renderLog();
    });
    syncTurnControls();
  }

  // Exposed for tests and debugging: the live peer connection and the measurements.
  state.stop = stop;
  state.median = () => median(state.latencies.map((entry) => entry.ms));

  boot();
})();
