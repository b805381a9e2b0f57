"""Generated customer journeys with their ground truth, and the model they are judged by.

`generate(seed, customers)` builds, from `random.Random(seed)` alone, a set of
true customers (ground-truth person ids) who each reach out several times over
the API, writing their handles in different ways (mixed case, gmail +tags,
phone numbers in seven national and international formats, stray spaces), with
retries (the same Idempotency-Key), double submits (the same external_id, some
of them in flight at once), repeats (the same words sent again as a new
message) and traps: different customers sharing a display name, a company
mail domain or the very same text, and a few unverified "claims" where one
customer writes with their own email and another customer's phone (a typo, a
shared phone): ground truth says those are different people.

`expected_contacts` replays the identity rules helpline documents (see
gateway/contact_graph.py) over the logical messages in send order: the
partition of messages into contacts that the evidence allows. `pair_scores`
compares two partitions pairwise over messages. Regenerate with another seed
or size: HELPLINE_JOURNEY_SEED / HELPLINE_JOURNEY_CUSTOMERS (see
tests/integration/test_journeys.py).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Handle = tuple[
    str, str
]  # (kind, canonical value): ("email", ...), ("phone", E.164), ("visitor", ...)

DEFAULT_REGION = "DE"
TRUSTED_TOKEN = "crm"
UNTRUSTED_TOKEN = "main"

FIRST = (
    "Anna", "Ben", "Clara", "David", "Elif", "Felix", "Greta", "Hannah", "Ivan", "Jonas",
    "Katrin", "Lukas", "Mia", "Noah", "Olga", "Paul", "Rosa", "Sven", "Tom", "Ute",
    "Wei", "Yusuf", "Zoe", "Aylin", "Marco",
)  # fmt: skip
LAST = (
    "Becker", "Fischer", "Hoffmann", "Klein", "Koch", "Meyer", "Neumann", "Richter",
    "Schmidt", "Schulz", "Wagner", "Weber", "Wolf", "Yilmaz", "Zimmermann", "Kaya",
    "Nowak", "Rossi", "Silva", "Jansen",
)  # fmt: skip
# Display names that several different customers share (the first trap).
SHARED_NAMES = ("Maria Garcia", "Thomas Müller", "Anna Schmidt", "John Smith", "Wei Zhang")
# Company domains many different customers write from (the second trap).
COMPANY_DOMAINS = ("acme.example", "globex.example", "initech.example", "umbrella.example")
FREE_DOMAINS = ("web.example", "posteo.example", "mailbox.example")  # no subaddressing
GMAIL = "gmail.com"  # subaddressing folded by helpline: ann+shop@ is ann@
# Texts that different customers send word for word (the third trap).
COMMON_TEXTS = (
    "My order has not arrived yet. Can you check?",
    "I was charged twice for my last invoice.",
    "How do I reset my password?",
    "Please cancel my subscription.",
    "The app crashes when I open the settings page.",
)
AREAS = ("30", "40", "89", "221", "151", "160", "170", "176")  # Berlin ... mobiles


@dataclass(frozen=True, slots=True)
class Customer:
    """One true person: their canonical handles, as helpline should normalize them."""

    id: int
    name: str
    email: str | None
    phone: str | None  # E.164
    visitor: str | None

    def handles(self) -> list[Handle]:
        found: list[Handle] = []
        if self.email:
            found.append(("email", self.email))
        if self.phone:
            found.append(("phone", self.phone))
        if self.visitor:
            found.append(("visitor", self.visitor))
        return found


@dataclass(frozen=True, slots=True)
class Message:
    """One logical message: what the customer meant to send once, however often it was sent."""

    id: str
    customer: int  # ground truth: who wrote it
    handles: tuple[Handle, ...]  # canonical, most specific first (email, phone, visitor)
    trusted: bool
    dedup: str  # "none", "idempotency_key", "external_id": how its copies are recognised
    concurrent: bool  # copies in flight at once (a double click) rather than one by one
    copies: int  # requests sent for it (1 = no retry)
    after: tuple[str, ...] = ()  # other customers' messages that must be answered first
    kind: str = "plain"  # "plain", "repeat", "claim"


@dataclass(frozen=True, slots=True)
class Request:
    token: str
    headers: dict[str, str]
    body: dict[str, Any]
    customer: int
    message: str  # the logical message id, shared by its retries
    attempt: int  # 0 for the first copy


@dataclass
class Journey:
    seed: int
    customers: list[Customer]
    messages: list[Message]  # in send order
    requests: list[Request]  # in send order, copies next to each other
    claims: list[tuple[int, int]] = field(default_factory=list)  # (writer, phone owner)

    def requests_of(self) -> dict[str, list[Request]]:
        grouped: dict[str, list[Request]] = {}
        for request in self.requests:
            grouped.setdefault(request.message, []).append(request)
        return grouped

    def truth(self) -> dict[str, int]:
        """Ground truth: message id -> the true customer who wrote it."""
        return {m.id: m.customer for m in self.messages}


# -- written forms --------------------------------------------------------------------------


def write_email(rng: random.Random, canonical: str) -> str:
    local, _, domain = canonical.partition("@")
    style = rng.random()
    if style < 0.3:
        local = ".".join(part.capitalize() for part in local.split("."))
    elif style < 0.4:
        local, domain = local.upper(), domain.upper()
    elif style < 0.5:
        domain = domain.capitalize()
    if domain.lower() == GMAIL and rng.random() < 0.5:
        local += "+" + rng.choice(("shop", "support", "news", "orders", "2024"))
    written = f"{local}@{domain}"
    return f" {written} " if rng.random() < 0.05 else written


def write_phone(rng: random.Random, e164: str) -> str:
    area, number = _split_de(e164.removeprefix("+49"))
    style = rng.randrange(7)
    if style == 0:
        return f"+49 {area} {number}"
    if style == 1:
        return f"0{area} {number}"
    if style == 2:
        return f"0049-{area}-{number}"
    if style == 3:
        return f"+49{area}{number}"
    if style == 4:
        return f"0{area}/{number}"
    if style == 5:
        return f"+49 (0){area} {number}"
    pairs = " ".join(number[i : i + 2] for i in range(0, len(number), 2))
    return f"(0{area}) {pairs}"


def _split_de(national: str) -> tuple[str, str]:
    for area in sorted(AREAS, key=len, reverse=True):
        if national.startswith(area):
            return area, national[len(area) :]
    raise ValueError(national)


# -- the generator ----------------------------------------------------------------------------


def _slug(name: str) -> str:
    plain = name.lower().replace("ü", "ue").replace("ö", "oe").replace("ä", "ae")
    return ".".join(plain.split())


def _customers(rng: random.Random, count: int) -> list[Customer]:
    emails: set[str] = set()
    phones: set[str] = set()
    made: list[Customer] = []
    for cid in range(count):
        if rng.random() < 0.12:
            name = rng.choice(SHARED_NAMES)  # several different people share it
        else:
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        handles = rng.random()
        has_email = handles < 0.9
        has_phone = handles >= 0.8 or rng.random() < 0.45
        has_visitor = rng.random() < 0.35 or not (has_email or has_phone)
        email = None
        if has_email:
            kind = rng.random()
            domain = (
                rng.choice(COMPANY_DOMAINS)
                if kind < 0.45
                else GMAIL
                if kind < 0.8
                else rng.choice(FREE_DOMAINS)
            )
            local = (
                _slug(name) if rng.random() < 0.6 else _slug(name)[0] + _slug(name).split(".")[-1]
            )
            candidate, n = f"{local}@{domain}", 1
            while candidate in emails:  # the same name at the same domain: another mailbox
                n += 1
                candidate = f"{local}{n}@{domain}"
            email = candidate
            emails.add(email)
        phone = None
        if has_phone:
            while phone is None or phone in phones:
                area = rng.choice(AREAS)
                digits = 8 if len(area) == 3 and area.startswith("1") else rng.choice((7, 8))
                phone = f"+49{area}{rng.randrange(10 ** (digits - 1), 10**digits)}"
            phones.add(phone)
        visitor = f"v-{rng.getrandbits(48):012x}" if has_visitor else None
        made.append(Customer(cid, name, email, phone, visitor))
    return made


def _text(rng: random.Random, customer: Customer) -> str:
    if rng.random() < 0.4:
        return rng.choice(COMMON_TEXTS)  # the same words as other customers
    order = rng.randrange(10000, 99999)
    return rng.choice(
        (
            f"Order {order}: the parcel arrived damaged.",
            f"Question about invoice {order}, the amount looks wrong.",
            f"Hi, it's {customer.name.split()[0]} again, any news on ticket {order}?",
            f"Can I change the delivery address of order {order}?",
        )
    )


def _pick_handles(rng: random.Random, customer: Customer) -> tuple[Handle, ...]:
    own = customer.handles()
    if len(own) == 1:
        return tuple(own)
    roll = rng.random()
    if roll < 0.06 and len(own) == 3:
        chosen = own
    elif roll < 0.3:
        chosen = rng.sample(own, 2)
    else:
        weights = [{"email": 5, "phone": 3, "visitor": 2}[kind] for kind, _ in own]
        chosen = rng.choices(own, weights)
    order = {"email": 0, "phone": 1, "visitor": 2}
    return tuple(sorted(chosen, key=lambda h: order[h[0]]))


class _Writer:
    """Turns logical messages into requests: written forms, keys, copies."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.external = Counter[str]()  # per token: external ids never reused within one
        self.start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
        self.sequence = 0

    def body(self, customer: Customer, handles: tuple[Handle, ...], text: str) -> dict[str, Any]:
        rng = self.rng
        sender: dict[str, str] = {}
        for kind, value in handles:
            if kind == "email":
                sender["email"] = write_email(rng, value)
            elif kind == "phone":
                sender["phone"] = write_phone(rng, value)
            else:
                sender["visitor_id"] = value
        if rng.random() < 0.85:
            sender["name"] = customer.name
        self.sequence += 1
        body: dict[str, Any] = {"from": sender, "text": text}
        if rng.random() < 0.5:
            body["subject"] = text.split(".", maxsplit=1)[0][:60]
        if rng.random() < 0.5:
            sent = self.start + timedelta(minutes=7 * self.sequence + rng.randrange(5))
            body["sent_at"] = sent.isoformat().replace("+00:00", "Z")
        return body

    def external_id(self, token: str) -> str:
        self.external[token] += 1  # "ext-1" exists under several tokens: scopes differ
        return f"ext-{self.external[token]}"


def generate(seed: int, customers: int) -> Journey:
    """A deterministic journey: the same seed and size give the same requests."""
    rng = random.Random(seed)
    people = _customers(rng, customers)
    writer = _Writer(rng)
    plans: dict[int, list[tuple[Message, list[Request]]]] = {}
    serial = 0

    def add(message: Message, token: str, body: dict[str, Any]) -> None:
        headers: dict[str, str] = {}
        if message.dedup == "idempotency_key":
            headers["Idempotency-Key"] = f"idem-{rng.getrandbits(64):016x}"
        elif message.dedup == "external_id":
            body["external_id"] = writer.external_id(token)
        requests = [
            Request(token, dict(headers), body, message.customer, message.id, attempt)
            for attempt in range(message.copies)
        ]
        plans.setdefault(message.customer, []).append((message, requests))

    first_with: dict[Handle, str] = {}  # the first message that carries a handle
    for person in people:
        count = rng.choices((1, 2, 3, 4, 5, 6, 8), (15, 20, 20, 15, 10, 10, 10))[0]
        previous: tuple[Message, dict[str, Any], str] | None = None
        for _ in range(count):
            serial += 1
            if previous is not None and rng.random() < 0.06:
                # The same words again, as a new message (no key): a repeat, not a duplicate.
                old, old_body, token = previous
                body = {k: v for k, v in old_body.items() if k != "external_id"}
                message = Message(
                    f"m{serial}", person.id, old.handles, old.trusted, "none", False, 1,
                    kind="repeat",
                )  # fmt: skip
            else:
                trusted = rng.random() < 0.1
                if trusted and rng.random() < 0.5:
                    handles = tuple(person.handles())  # the CRM knows the whole record
                else:
                    handles = _pick_handles(rng, person)
                token = TRUSTED_TOKEN if trusted else UNTRUSTED_TOKEN
                roll = rng.random()
                if roll < 0.12:
                    dedup, copies, concurrent = "idempotency_key", rng.choice((2, 2, 3)), False
                elif roll < 0.18:
                    dedup, copies, concurrent = "idempotency_key", 2, True
                elif roll < 0.3:
                    dedup, copies, concurrent = "external_id", 2, rng.random() < 0.5
                elif roll < 0.55:
                    dedup, copies, concurrent = (
                        rng.choice(("idempotency_key", "external_id")),
                        1,
                        False,
                    )
                else:
                    dedup, copies, concurrent = "none", 1, False
                body = writer.body(person, handles, _text(rng, person))
                message = Message(
                    f"m{serial}", person.id, handles, trusted, dedup, concurrent, copies
                )
            add(message, token, body)
            previous = (message, body, token)
            for handle in message.handles:
                first_with.setdefault(handle, message.id)

    # Claims: an unverified message with the writer's own email and someone else's phone,
    # sent once both handles have history (else linking the unknown one would be allowed).
    claims: list[tuple[int, int]] = []
    writers = [p for p in people if p.email and ("email", p.email) in first_with]
    owners = [p for p in people if p.phone and ("phone", p.phone) in first_with]
    wanted = max(3, customers // 40)
    seen: set[frozenset[int]] = set()
    for _ in range(wanted * 20):
        if len(claims) >= wanted or not writers or not owners:
            break
        claimant, owner = rng.choice(writers), rng.choice(owners)
        pair = frozenset((claimant.id, owner.id))
        if claimant.id == owner.id or pair in seen:
            continue
        seen.add(pair)
        claims.append((claimant.id, owner.id))
        assert claimant.email and owner.phone
        handles = (("email", claimant.email), ("phone", owner.phone))
        serial += 1
        message = Message(
            f"m{serial}", claimant.id, handles, False, "none", False, 1,
            after=(first_with[("email", claimant.email)], first_with[("phone", owner.phone)]),
            kind="claim",
        )  # fmt: skip
        add(message, UNTRUSTED_TOKEN, writer.body(claimant, handles, _text(rng, claimant)))

    # Send order: round robin over customers in a shuffled order, claims last of all.
    messages: list[Message] = []
    requests: list[Request] = []
    turn = [p.id for p in people]
    rng.shuffle(turn)
    queues = {cid: [step for step in plans.get(cid, []) if step[0].kind != "claim"] for cid in turn}
    depth = max((len(q) for q in queues.values()), default=0)
    for round_ in range(depth):
        for cid in turn:
            if round_ < len(queues[cid]):
                message, sent = queues[cid][round_]
                messages.append(message)
                requests.extend(sent)
    for cid in turn:
        for message, sent in plans.get(cid, []):
            if message.kind == "claim":
                messages.append(message)
                requests.extend(sent)
    return Journey(seed, people, messages, requests, claims)


# -- the model: what helpline's documented rules allow ----------------------------------------


@dataclass
class Outcome:
    contact_of: dict[str, int]  # message id -> final contact (the survivor of its merges)
    merges: int  # contact.merged events
    suggestions: int  # contact.link_suggested events


def expected_contacts(messages: Iterable[Message]) -> Outcome:
    """Replay the identity rules over logical messages in order (duplicates change nothing).

    A message's known handles name their contacts, most specific handle first. None known:
    a new contact. One, or several without verified evidence: the first one's contact, and
    unknown handles are linked to it ("linking a new handle is always fine"); several and
    unverified also raise one suggestion event if any pair is new. Several and verified
    (a trusted token): the others merge into the oldest contact.
    """
    owner_of: dict[Handle, int] = {}
    merged_into: dict[int, int] = {}
    suggested: set[tuple[int, int]] = set()
    contact_of: dict[str, int] = {}
    merges = suggestions = created = 0

    def find(contact: int) -> int:
        while contact in merged_into:
            contact = merged_into[contact]
        return contact

    for message in messages:
        known = [find(owner_of[h]) for h in message.handles if h in owner_of]
        owners = list(dict.fromkeys(known))
        if not owners:
            created += 1
            owner = created
        elif len(owners) == 1 or not message.trusted:
            owner = owners[0]
        else:
            owner = min(owners)  # created first: contact numbers grow with time
        for handle in message.handles:
            owner_of.setdefault(handle, owner)
        others = [c for c in owners if c != owner]
        if others and message.trusted:
            for other in others:
                merged_into[other] = owner
            merges += 1
        elif others:
            fresh = [c for c in others if (min(owner, c), max(owner, c)) not in suggested]
            suggested.update((min(owner, c), max(owner, c)) for c in fresh)
            suggestions += bool(fresh)
        contact_of[message.id] = owner
    return Outcome({m: find(c) for m, c in contact_of.items()}, merges, suggestions)


@dataclass(frozen=True, slots=True)
class Scores:
    precision: float  # of the pairs put together, the share that truly belong together
    recall: float  # of the pairs that belong together, the share put together
    predicted_pairs: int
    true_pairs: int
    wrong_pairs: int


def _pairs(sizes: Iterable[int]) -> int:
    return sum(n * (n - 1) // 2 for n in sizes)


def pair_scores(predicted: Mapping[str, Hashable], truth: Mapping[str, Hashable]) -> Scores:
    """Pairwise precision and recall over messages: same cluster here vs same cluster there."""
    assert predicted.keys() == truth.keys()
    both = _pairs(Counter((predicted[m], truth[m]) for m in truth).values())
    said = _pairs(Counter(predicted.values()).values())
    real = _pairs(Counter(truth.values()).values())
    return Scores(
        precision=both / said if said else 1.0,
        recall=both / real if real else 1.0,
        predicted_pairs=said,
        true_pairs=real,
        wrong_pairs=said - both,
    )


def false_merges(
    predicted: Mapping[str, Hashable], truth: Mapping[str, Hashable]
) -> dict[Hashable, set[Hashable]]:
    """Predicted clusters that hold messages of more than one true customer."""
    members: dict[Hashable, set[Hashable]] = {}
    for message, cluster in predicted.items():
        members.setdefault(cluster, set()).add(truth[message])
    return {cluster: who for cluster, who in members.items() if len(who) > 1}
