"""The dialog a UAS forms when it answers an INVITE (RFC 3261 §12): its identifiers and
the in-dialog requests we send (BYE, REFER)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .message import (
    SipRequest,
    header_params,
    new_branch,
    tag_of,
    uri_of,
)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # the INVITE's To (our address of record), name-addr form
    remote_uri: str  # the INVITE's From
    remote_target: str  # the caller's Contact URI
    remote_seq: int
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    confirmed: bool = False

    @classmethod
    def from_invite(cls, invite: SipRequest, local_tag: str) -> Dialog:
        contact = invite.get_all("Contact")
        to_value = invite.get("To") or ""
        from_value = invite.get("From") or ""
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=tag_of(from_value),
            local_uri=_without_params(to_value),
            remote_uri=_without_params(from_value),
            remote_target=uri_of(contact[0]) if contact else uri_of(from_value),
            remote_seq=invite.cseq[0],
            route_set=invite.get_all("Record-Route"),
        )

    def matches(self, request: SipRequest) -> bool:
        """An in-dialog request from the peer: same Call-ID and tags (§12.2.2)."""
        return (
            request.call_id == self.call_id
            and tag_of(request.get("To")) == self.local_tag
            and tag_of(request.get("From")) == self.remote_tag
        )

    def accept_remote_cseq(self, request: SipRequest) -> bool:
        """In-dialog CSeq must grow (an ACK or CANCEL reuses its INVITE's number)."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if number <= self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def create_request(
        self,
        method: str,
        *,
        via_host: str,
        via_port: int,
        transport: str,
        contact: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SipRequest:
        """A new in-dialog request (§12.2.1.1) with its own Via branch and the next CSeq."""
        if self.local_seq == 0:
            self.local_seq = 1
        else:
            self.local_seq += 1
        request = SipRequest(method=method, uri=self.remote_target, body=body)
        request.add("Via", f"SIP/2.0/{transport.upper()} {via_host}:{via_port};branch={new_branch()};rport")
        request.add("Max-Forwards", "70")
        request.add("From", f"{self.local_uri};tag={self.local_tag}")
        to = self.remote_uri + (f";tag={self.remote_tag}" if self.remote_tag else "")
        request.add("To", to)
        request.add("Call-ID", self.call_id)
        request.add("CSeq", f"{self.local_seq} {method}")
        for route in self.route_set:  # a UAS uses Record-Route in the order received
            request.add("Route", route)
        request.add("Contact", contact)
        for name, value in headers or []:
            request.add(name, value)
        return request


def _without_params(value: str) -> str:
    """A From/To value without its tag (other parameters kept)."""
    if not header_params(value).get("tag"):
        return value
    head, tail = (value.rsplit(">", 1)[0] + ">", value.rsplit(">", 1)[1]) if ">" in value else ("", value)
    kept = [part for part in tail.split(";") if part and not part.strip().lower().startswith("tag=")]
    if head:
        return head + "".join(f";{part}" for part in kept)
    return ";".join(kept)
