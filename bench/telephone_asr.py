"""Speech recognition over a telephone line: WER and wrong-language transcripts.

The shared real speech (/work/shared/audio) is band-limited to 300-3400 Hz, resampled to
8 kHz and G.711-coded (µ-law and A-law), with room tone around each turn; single-word turns
are cut out of the same recordings with Whisper's word timestamps.

Default (server) mode plays every turn into a real ``openrealtime serve`` over a Realtime
WebSocket session with ``audio/pcmu`` (then ``audio/pcma``) input, server VAD and no answers,
and scores the ``input_audio_transcription.completed`` transcripts: WER per clip and overall on
the 11 clips, the one-word turns, and transcripts in a wrong language (any letter outside
English's alphabet). ``--server-src DIR`` runs the server from another source tree (e.g. the
main branch, to compare before/after in one run).

``--detection`` studies Whisper base's language detection instead (no server): for English
utterances of every length (1-, 2- and 4-word spans and whole clips, both codecs) and
espeak-ng speech in eight other languages (1 word to ~6 s; spans on the first codec only), it prints the detected language,
its probability and the speech length, what per-utterance auto-detection transcribes (the old
behaviour), and how the session policy's thresholds (engines/asr/language.py) would decide.

    python bench/telephone_asr.py [--codecs pcmu,pcma] [--speed 1] [--server-src DIR]
    python bench/telephone_asr.py --detection

Writes bench/results/telephone_asr.json (or telephone_language_detection.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info
from openrealtime.benchmark.server import start_server
from openrealtime.benchmark.telephone import (
    Codec,
    TelephoneTurn,
    cut,
    espeak_speech,
    load_whisper,
    read_wav16k,
    telephone_turn,
    transcribe_over_line,
    word_timings,
)
from openrealtime.benchmark.telephone import clip_turns as shared_clip_turns
from openrealtime.benchmark.telephone import references as shared_references
from openrealtime.benchmark.telephone import word_turns as shared_word_turns
from openrealtime.engines.asr.language import (
    DEFAULT_SWITCH_PROBABILITY,
    DEFAULT_SWITCH_SECONDS,
    NOT_SPOKEN_ON_CALLS,
    LanguagePolicy,
    speech_seconds,
)
from openrealtime.engines.asr.wer import corpus_wer, normalize, wer

RESULTS = Path(__file__).resolve().parent / "results"
AUDIO = Path(
    os.environ.get("OPENREALTIME_SHARED_AUDIO", Path(__file__).resolve().parents[2] / "shared" / "audio")
)
if not AUDIO.exists():
    AUDIO = Path("/work/shared/audio")

FOREIGN: dict[str, tuple[str, ...]] = {
    "es": (
        "Hola.",
        "Buenos días, ¿cómo está?",
        "Quisiera saber el estado de mi pedido, por favor.",
        "Buenas tardes, llamo porque quisiera cambiar la dirección de entrega de mi pedido, "
        "que todavía no ha llegado a mi casa.",
    ),
    "de": (
        "Hallo.",
        "Guten Tag, wie geht es Ihnen?",
        "Ich möchte bitte den Status meiner Bestellung wissen.",
        "Guten Abend, ich rufe an, weil ich die Lieferadresse meiner Bestellung ändern möchte, "
        "die noch nicht bei mir angekommen ist.",
    ),
    "fr": (
        "Bonjour.",
        "Bonjour, comment allez-vous ?",
        "Je voudrais connaître l'état de ma commande, s'il vous plaît.",
        "Bonsoir, j'appelle parce que je voudrais changer l'adresse de livraison de ma commande, "
        "qui n'est toujours pas arrivée chez moi.",
    ),
    "it": (
        "Pronto.",
        "Buongiorno, come sta?",
        "Vorrei sapere lo stato del mio ordine, per favore.",
        "Buonasera, chiamo perché vorrei cambiare l'indirizzo di consegna del mio ordine, "
        "che non è ancora arrivato a casa mia.",
    ),
    "pt": (
        "Olá.",
        "Bom dia, como vai?",
        "Eu gostaria de saber o estado do meu pedido, por favor.",
        "Boa tarde, estou ligando porque gostaria de mudar o endereço de entrega do meu pedido, "
        "que ainda não chegou na minha casa.",
    ),
    "nl": (
        "Hallo.",
        "Goedemiddag, hoe gaat het?",
        "Ik wil graag de status van mijn bestelling weten.",
        "Goedenavond, ik bel omdat ik het afleveradres van mijn bestelling wil wijzigen, "
        "die nog steeds niet bij mij is aangekomen.",
    ),
    "pl": (
        "Halo.",
        "Dzień dobry, jak się pan ma?",
        "Chciałbym poznać status mojego zamówienia, proszę.",
        "Dobry wieczór, dzwonię, ponieważ chciałbym zmienić adres dostawy mojego zamówienia, "
        "które wciąż do mnie nie dotarło.",
    ),
    "ru": (
        "Алло.",
        "Добрый день, как дела?",
        "Я хотел бы узнать статус моего заказа, пожалуйста.",
        "Добрый вечер, я звоню, потому что хотел бы изменить адрес доставки моего заказа, "
        "который до сих пор не пришёл.",
    ),
    "en": (
        "Hello.",
        "Good morning, how are you?",
        "I would like to know the status of my order, please.",
        "Good evening, I am calling because I would like to change the delivery address of my "
        "order, which still has not arrived at my house.",
    ),
}


def references() -> dict[str, str]:
    return shared_references(AUDIO)


def clip_turns(codec: Codec) -> list[TelephoneTurn]:
    return shared_clip_turns(AUDIO, codec)


def word_turns(codec: Codec, whisper: Any) -> list[TelephoneTurn]:
    return shared_word_turns(AUDIO, codec, whisper)


def foreign_turns(codec: Codec) -> list[tuple[str, TelephoneTurn]]:
    out: list[tuple[str, TelephoneTurn]] = []
    for language, sentences in FOREIGN.items():
        for k, sentence in enumerate(sentences):
            pcm = espeak_speech(sentence, language)
            out.append((language, telephone_turn(f"espeak-{language}-{k}", pcm, sentence, codec, seed=k)))
    return out


def english_spans(codec: Codec, whisper: Any) -> list[TelephoneTurn]:
    """English utterances of every length: 1-, 2- and 4-word spans of the read clips."""
    turns: list[TelephoneTurn] = []
    for i, name in enumerate(sorted(references())):
        if not name.startswith("librivox"):
            continue
        clip = read_wav16k(AUDIO / f"{name}.wav")
        words = word_timings(whisper, clip)
        for size in (1, 2, 4):
            for start in range(0, len(words) - size + 1, 3):
                span = words[start : start + size]
                piece = cut(clip, span[0].start, span[-1].end)
                label = " ".join(w.text for w in span)
                turns.append(
                    telephone_turn(f"{name}[{start}:{start + size}]", piece, label, codec, seed=i + start)
                )
    return turns


def foreign_letters(text: str) -> bool:
    """A letter English does not use (accents, other scripts): a transcript in a wrong language."""
    return any(c.isalpha() and not ("a" <= c.lower() <= "z") for c in text)


# --------------------------------------------------------------------------- detection study


def detection_study(codecs: list[Codec]) -> dict[str, Any]:
    from openrealtime.engines.asr.whisper import WhisperTranscriber

    engine = WhisperTranscriber("whisper-base")
    whisper = load_whisper()
    rows: list[dict[str, Any]] = []
    for codec in codecs:
        spans = english_spans(codec, whisper) if codec == codecs[0] else []
        english = [("en", t) for t in (*clip_turns(codec), *spans)]
        for truth, turn in (*english, *foreign_turns(codec)):
            audio = turn.pcm16k().astype("float32") / 32768.0
            tracked = engine.transcribe_segments(audio, policy=LanguagePolicy(current="en"))
            auto = engine.transcribe(audio)
            detection = tracked.detection
            assert detection is not None
            row = {
                "name": turn.name,
                "codec": codec,
                "truth": truth,
                "source": "espeak" if turn.name.startswith("espeak") else "real",
                "speech_s": round(speech_seconds(audio), 2),
                "detected": detection.language,
                "p": round(detection.probability, 3),
                "top3": [(c, round(p, 3)) for c, p in detection.probabilities[:3]],
                "auto_language": auto.language,
                "auto_text": auto.text,
                "tracked_text": tracked.transcript.text,
                "tracked_language": tracked.transcript.language,
            }
            rows.append(row)
            print(
                f"{codec} {truth} {row['speech_s']:5.2f}s {row['detected']}={row['p']:.2f} "
                f"auto[{auto.language}] {auto.text[:40]!r} -> [{row['tracked_language']}] "
                f"{row['tracked_text'][:40]!r}",
                flush=True,
            )
    return {"rows": rows, "summary": summarise_detection(rows)}


def summarise_detection(rows: list[dict[str, Any]]) -> dict[str, Any]:
    english = [r for r in rows if r["truth"] == "en" and r["source"] == "real"]
    foreign = [r for r in rows if r["truth"] != "en"]
    summary: dict[str, Any] = {
        "real_english_utterances": len(english),
        "auto_wrong_language": sum(r["auto_language"] != "en" for r in english),
        "auto_wrong_language_by_length": {},
        "tracked_wrong_script": sum(foreign_letters(r["tracked_text"]) for r in english),
    }
    for lo, hi in ((0, 0.75), (0.75, 1.5), (1.5, 2.5), (2.5, 4), (4, 99)):
        bucket = [r for r in english if lo <= r["speech_s"] < hi]
        summary["auto_wrong_language_by_length"][f"{lo}-{hi}s"] = (
            f"{sum(r['auto_language'] != 'en' for r in bucket)}/{len(bucket)}"
        )
    grid = []
    for p in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        for s in (1.0, 1.5, 2.0, 2.5, 3.0):

            def switches(r: dict[str, Any], p: float = p, s: float = s) -> bool:
                return bool(r["detected"] not in NOT_SPOKEN_ON_CALLS and r["p"] >= p and r["speech_s"] >= s)

            grid.append(
                {
                    "p": p,
                    "s": s,
                    "english_false_switches": sum(switches(r) and r["detected"] != "en" for r in english),
                    "foreign_followed": sum(switches(r) and r["detected"] == r["truth"] for r in foreign),
                    "foreign_wrong_switches": sum(
                        switches(r) and r["detected"] not in (r["truth"], "en") for r in foreign
                    ),
                    "n_foreign": len(foreign),
                }
            )
    summary["threshold_grid"] = grid
    summary["english_wrong_detection_max_p_by_length"] = {
        f"{lo}-{hi}s": max(
            (r["p"] for r in english if r["detected"] != "en" and lo <= r["speech_s"] < hi), default=0.0
        )
        for lo, hi in ((0, 0.75), (0.75, 1.5), (1.5, 2.5), (2.5, 4), (4, 99))
    }
    summary["policy"] = {
        "switch_probability": DEFAULT_SWITCH_PROBABILITY,
        "switch_seconds": DEFAULT_SWITCH_SECONDS,
        "never_switch_to": sorted(NOT_SPOKEN_ON_CALLS),
    }
    return summary


# --------------------------------------------------------------------------- over the server


def score_line(results: list[Any], codec: str) -> dict[str, Any]:
    clips = [r for r in results if ":" not in r.turn.name]
    words = [r for r in results if ":" in r.turn.name]
    rows = []
    for r in results:
        score = wer(r.turn.reference, r.text)
        rows.append(
            {
                "codec": codec,
                "turn": r.turn.name,
                "reference": r.turn.reference,
                "transcript": r.text,
                "items": len(r.transcripts),
                "wer": round(score.wer, 3),
                "wrong_language": foreign_letters(r.text),
                "failures": r.failures,
            }
        )
    return {
        "rows": rows,
        "clip_wer": round(corpus_wer((r.turn.reference, r.text) for r in clips), 4),
        "word_wer": round(corpus_wer((r.turn.reference, r.text) for r in words), 4),
        "words_exact": sum(wer(r.turn.reference, r.text).wer == 0 for r in words),
        # a cut at Whisper's word timestamps often keeps a syllable of a neighbour ("of clubs")
        "words_heard": sum(r.turn.reference in normalize(r.text) for r in words),
        "n_words": len(words),
        "wrong_language": sum(foreign_letters(r.text) for r in results),
        "n_turns": len(results),
    }


def over_server(
    codecs: list[Codec], speed: float, server_src: Path | None, language: str | None
) -> dict[str, Any]:
    whisper = load_whisper()
    plans = {codec: [*clip_turns(codec), *word_turns(codec, whisper)] for codec in codecs}
    del whisper
    env_src = os.environ.get("PYTHONPATH")
    if server_src is not None:
        os.environ["PYTHONPATH"] = str(server_src)
    out: dict[str, Any] = {}
    try:
        with start_server(["--no-warm-up"] if "--no-warm-up" in sys.argv else []) as server:
            for codec, turns in plans.items():
                started = time.monotonic()
                results = asyncio.run(
                    transcribe_over_line(
                        server.realtime_url, server.api_key, turns, speed=speed, language=language
                    )
                )
                scored = score_line(results, codec)
                scored["seconds"] = round(time.monotonic() - started, 1)
                out[codec] = scored
                for row in scored["rows"]:
                    flag = " WRONG-LANGUAGE" if row["wrong_language"] else ""
                    print(
                        f"{codec} {row['turn']:28} WER {row['wer']:5.1%}  {row['transcript']!r}{flag}",
                        flush=True,
                    )
                print(
                    f"{codec}: clip WER {scored['clip_wer']:.1%}, one-word turns: word heard in "
                    f"{scored['words_heard']}/{scored['n_words']}, exact {scored['words_exact']}, "
                    f"wrong language {scored['wrong_language']}/{scored['n_turns']}",
                    flush=True,
                )
    finally:
        if server_src is not None:
            if env_src is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = env_src
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", default="pcmu,pcma")
    parser.add_argument("--speed", type=float, default=1.0, help="playback speed (1: real time)")
    parser.add_argument("--server-src", type=Path, help="run the server from this source tree")
    parser.add_argument("--language", help="set audio.input.transcription.language")
    parser.add_argument("--detection", action="store_true", help="language-detection study, no server")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    codecs: list[Codec] = [c for c in args.codecs.split(",") if c in ("pcmu", "pcma")]  # type: ignore[misc]
    report: dict[str, Any] = {"machine": machine_info(), "command": " ".join(sys.argv)}
    if args.detection:
        report.update(detection_study(codecs))
        out = args.out or RESULTS / "telephone_language_detection.json"
        print(json.dumps(report["summary"], indent=1))
    else:
        report["server_src"] = str(args.server_src or "this tree")
        report["results"] = over_server(codecs, args.speed, args.server_src, args.language)
        out = args.out or RESULTS / "telephone_asr.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
