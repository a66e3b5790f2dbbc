"""Routing over several hosts (server/providers/routed.py, server/services/routing.py): the decision,
failover before the first token, health with a controlled clock, and three real fake Ollama hosts."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import httpx
import pytest

from server.providers.base import ChatMessage, ChatRequest, Delta, Done, ModelInfo, ProviderError, Timeouts
from server.providers.ollama import OllamaProvider
from server.providers.routed import HostHealthBook, RoutedProvider, Target, probe
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.anyio

MODEL = "llama3.2:latest"
REQUEST = ChatRequest(model="ignored", messages=[ChatMessage(role="user", content="hello there")])
TIMEOUTS = Timeouts(connect=2.0, first_token=5.0, idle=5.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A ChatProvider whose answers are scripted: an error before any event, or a reply."""

    kind = "ollama"

    def __init__(self, fail: ProviderError | None = None, fail_after_first: bool = False) -> None:
        self.fail = fail
        self.fail_after_first = fail_after_first
        self.calls = 0

    async def stream_chat(self, request: ChatRequest, timeouts: Timeouts = Timeouts()):
        self.calls += 1
        if self.fail is not None and not self.fail_after_first:
            raise self.fail
        yield Delta(content="hi")
        if self.fail is not None:
            raise self.fail
        yield Done()

    async def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        return []

    async def aclose(self) -> None:
        return None


def target(key: str, adapter=None, *, priority: int = 0, weight: float = 1.0) -> Target:
    return Target(key, f"host-{key}", adapter or Scripted(), MODEL, priority, weight)


async def collect(provider: RoutedProvider) -> list[object]:
    async with aclosing(provider.stream_chat(REQUEST, TIMEOUTS)) as events:
        return [event async for event in events]


# --- the decision ----------------------------------------------------------------------------------------


def test_weights_are_honoured_within_five_percent_over_1000_requests() -> None:
    book = HostHealthBook(rng=random.Random(7))
    targets = [target("a", weight=5), target("b", weight=3), target("c", weight=2)]
    picks = Counter(book.pick(targets).key for _ in range(1000))
    for key, share in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(picks[key] / 1000 - share) <= 0.05, picks


def test_best_priority_first_and_unavailable_hosts_skipped() -> None:
    clock = Clock()
    book = HostHealthBook(clock=clock, rng=random.Random(1))
    targets = [target("a", priority=1), target("b", priority=0, weight=1), target("c", priority=0)]
    for _ in range(50):
        assert [t.key for t in book.plan(targets)][2] == "a"  # the worse priority comes last
    book.record_failure("b", "boom")
    assert [t.key for t in book.plan(targets)] == ["c", "a"]


def test_least_busy_picks_the_host_with_fewest_streams() -> None:
    book = HostHealthBook(strategy="least_busy", rng=random.Random(3))
    targets = [target("a"), target("b"), target("c")]
    book.host("a").streams_in_flight = 4
    book.host("b").streams_in_flight = 1
    book.host("c").streams_in_flight = 2
    assert [t.key for t in book.plan(targets)] == ["b", "c", "a"]


def test_cooldown_grows_exponentially_up_to_the_cap_and_a_probe_ends_it() -> None:
    clock = Clock()
    book = HostHealthBook(cooldown=2.0, cooldown_max=10.0, clock=clock)
    waits = []
    for _ in range(5):
        book.record_failure("a", "refused")
        waits.append(book.hosts["a"].cooldown_until - clock.now)
    assert waits == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert book.state("a") == "cooling_down" and not book.available("a")
    assert book.due() == clock.now + 10.0
    clock.now += 10.0
    assert book.state("a") == "healthy" and book.available("a")  # due: tried again
    book.record_probe("a", False, latency_ms=None, error="refused")
    assert book.hosts["a"].consecutive_failures == 6 and book.state("a") == "down"
    clock.now += 10.0
    book.record_probe("a", False, latency_ms=None, error="still refused")
    clock.now += 10.0
    assert book.state("a") == "down" and not book.available("a")
    book.record_probe("a", True, latency_ms=1.5, error=None)
    assert book.state("a") == "healthy" and book.hosts["a"].consecutive_failures == 0
    assert book.state("a", enabled=False) == "disabled"


def test_no_available_host_tries_them_all_soonest_due_first() -> None:
    clock = Clock()
    book = HostHealthBook(clock=clock)
    book.record_failure("a", "x")
    book.record_failure("a", "x")
    book.record_failure("b", "x")
    assert [t.key for t in book.plan([target("a"), target("b")])] == ["b", "a"]


# --- failover (scripted adapters) -------------------------------------------------------------------------


async def test_a_connect_error_before_the_first_token_moves_to_the_next_host() -> None:
    dead = Scripted(ProviderError("upstream_unreachable", "refused to connect"))
    live = Scripted()
    book = HostHealthBook(rng=random.Random(0))
    routed = RoutedProvider([target("a", dead, priority=0), target("b", live, priority=1)], book)
    events = await collect(routed)
    assert events == [Delta(content="hi"), Done(served_by={"provider_id": "b", "name": "host-b"})]
    assert routed.served_by is not None and routed.served_by.key == "b"
    assert dead.calls == 1 and book.state("a") == "cooling_down"
    assert book.hosts["a"].streams_in_flight == 0 and book.hosts["b"].streams_in_flight == 0


@pytest.mark.parametrize(
    "code", ["upstream_timeout", "upstream_busy", "upstream_rate_limited", "upstream_error"]
)
async def test_timeouts_5xx_and_429_before_the_first_token_are_retried(code: str) -> None:
    routed = RoutedProvider(
        [target("a", Scripted(ProviderError(code, "no")), priority=0), target("b", priority=1)],
        HostHealthBook(),
    )
    assert (await collect(routed))[-1] == Done(served_by={"provider_id": "b", "name": "host-b"})
    assert routed.served_by is not None and routed.served_by.key == "b"


async def test_never_retried_after_the_first_token() -> None:
    broken = Scripted(ProviderError("upstream_error", "lost"), fail_after_first=True)
    other = Scripted()
    routed = RoutedProvider(
        [target("a", broken, priority=0), target("b", other, priority=1)], HostHealthBook()
    )
    seen: list[object] = []

    async def consume() -> None:
        async with aclosing(routed.stream_chat(REQUEST, TIMEOUTS)) as events:
            async for event in events:
                seen.append(event)

    with pytest.raises(ProviderError) as info:
        await consume()
    assert info.value.code == "upstream_error" and seen == [Delta(content="hi")] and other.calls == 0


async def test_a_bad_request_is_not_retried() -> None:
    other = Scripted()
    routed = RoutedProvider(
        [target("a", Scripted(ProviderError("upstream_bad_request", "bad", status=400))), target("b", other)],
        HostHealthBook(rng=random.Random(0)),
    )
    routed.targets = tuple(sorted(routed.targets, key=lambda t: t.key))
    routed.book.strategy = "least_busy"
    routed.book.host("b").streams_in_flight = 5  # "a" first
    with pytest.raises(ProviderError) as info:
        await collect(routed)
    assert info.value.code == "upstream_bad_request" and other.calls == 0


async def test_retries_are_bounded() -> None:
    adapters = [Scripted(ProviderError("upstream_unreachable", "refused")) for _ in range(4)]
    book = HostHealthBook(retries=1)
    routed = RoutedProvider([target(str(i), a, priority=i) for i, a in enumerate(adapters)], book)
    with pytest.raises(ProviderError) as info:
        await collect(routed)
    assert [a.calls for a in adapters] == [1, 1, 0, 0]
    assert info.value.code == "all_hosts_failed" and info.value.status == 502
    assert "host-2 (not tried" in info.value.message


# --- three real fake Ollama hosts -------------------------------------------------------------------------


@pytest.fixture
def hosts() -> Iterator[list[FakeOllama]]:
    fakes = [FakeOllama(token_delay=0.002).start() for _ in range(3)]
    try:
        yield fakes
    finally:
        for fake in fakes:
            fake.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=None) as c:
        yield c


def real_targets(fakes: list[FakeOllama], client: httpx.AsyncClient, weights=(1, 1, 1)) -> list[Target]:
    return [
        Target(str(i), f"host-{i}", OllamaProvider(f.url, client), MODEL, 0, w)
        for i, (f, w) in enumerate(zip(fakes, weights, strict=True))
    ]


def chats(fake: FakeOllama) -> int:
    return sum(1 for method, path in fake.requests if (method, path) == ("POST", "/api/chat"))


async def test_weights_over_real_http(hosts: list[FakeOllama], client: httpx.AsyncClient) -> None:
    weights = (6, 3, 1)
    book = HostHealthBook(rng=random.Random(11))
    targets = real_targets(hosts, client, weights)
    replay = HostHealthBook(rng=random.Random(11))
    expected = Counter(replay.pick(targets).key for _ in range(200))
    served: Counter[str] = Counter()
    for _ in range(200):
        routed = RoutedProvider(targets, book)
        assert isinstance((await collect(routed))[-1], Done)
        assert routed.served_by is not None
        served[routed.served_by.key] += 1
    assert served == expected  # the very decisions the decision function makes, over real HTTP
    assert [chats(f) for f in hosts] == [served["0"], served["1"], served["2"]]
    for key, weight in zip("012", weights, strict=True):
        assert abs(served[key] / 200 - weight / 10) <= 0.08, served


async def test_a_host_killed_mid_run_loses_no_request_that_had_not_streamed(
    hosts: list[FakeOllama], client: httpx.AsyncClient
) -> None:
    for fake in hosts:
        fake.token_delay = 0.01  # replies of ~10 tokens: some are mid-stream when the host dies
    # Time stands still for the book: a cool-down never ends within the run, so the killed host's state
    # at the end does not depend on how long the waves after its first failure took.
    book = HostHealthBook(clock=Clock(), rng=random.Random(5))
    targets = real_targets(hosts, client)
    outcomes: list[tuple[bool, bool]] = []  # (streamed a token, completed)
    killed = asyncio.Event()
    kill_now = asyncio.Event()

    async def one() -> None:
        routed = RoutedProvider(targets, book)
        streamed = False
        try:
            async with aclosing(routed.stream_chat(REQUEST, TIMEOUTS)) as events:
                async for event in events:
                    streamed = streamed or isinstance(event, Delta)
                    if len(outcomes) >= 30 and routed.served_by is not None and routed.served_by.key == "1":
                        kill_now.set()  # host 1 is streaming this reply: kill it now
            outcomes.append((streamed, True))
        except ProviderError:
            outcomes.append((streamed, False))

    async def kill() -> None:
        await kill_now.wait()
        await asyncio.to_thread(hosts[1].stop)
        killed.set()

    killer = asyncio.create_task(kill())
    for _ in range(12):  # 12 waves of 10 concurrent requests
        if kill_now.is_set():
            # The waves after the kill meet a host that is gone: while it shuts down, its open keep-alive
            # connections may still answer for up to its grace period.
            await killed.wait()
        await asyncio.gather(*(one() for _ in range(10)))
    await killer
    assert killed.is_set() and len(outcomes) == 120
    lost_before_token = [o for o in outcomes if not o[0] and not o[1]]
    assert lost_before_token == []
    completed = sum(1 for o in outcomes if o[1])
    assert completed >= 120 - 10  # only replies already streaming from the killed host may fail
    assert book.state("1") == "cooling_down" and book.host("1").consecutive_failures >= 1


async def test_a_host_that_comes_back_is_used_again_after_one_probe(
    hosts: list[FakeOllama], client: httpx.AsyncClient
) -> None:
    clock = Clock()
    book = HostHealthBook(clock=clock, cooldown=1.0, cooldown_max=30.0, rng=random.Random(2))
    targets = real_targets(hosts, client)
    port = hosts[0].port
    hosts[0].stop()
    for _ in range(5):  # routed around the dead host
        routed = RoutedProvider(targets, book)
        assert isinstance((await collect(routed))[-1], Done)
        assert routed.served_by is not None and routed.served_by.key != "0"
    assert book.state("0") == "cooling_down"
    result = await probe(client, "ollama", hosts[0].url, timeout=1.0)
    book.record_probe("0", result.ok, latency_ms=result.latency_ms, error=result.error)
    assert not result.ok and book.state("0") == "down"
    hosts[0] = FakeOllama(port=port).start()  # it comes back on its address
    clock.now += 2.0  # its cool-down is due: the probe loop probes it at once (no full interval)
    result = await probe(client, "ollama", hosts[0].url, timeout=1.0)
    book.record_probe("0", result.ok, latency_ms=result.latency_ms, error=result.error)
    assert result.ok and result.latency_ms is not None and book.state("0") == "healthy"
    served = Counter()
    for _ in range(30):
        routed = RoutedProvider(targets, book)
        await collect(routed)
        assert routed.served_by is not None
        served[routed.served_by.key] += 1
    assert served["0"] > 0


async def test_a_404_on_one_host_removes_only_that_target(
    hosts: list[FakeOllama], client: httpx.AsyncClient
) -> None:
    hosts[2].models.pop(MODEL)
    book = HostHealthBook(retries=0, rng=random.Random(4))  # a 404 does not use up a retry
    targets = real_targets(hosts, client)
    served: Counter[str] = Counter()
    for _ in range(30):
        routed = RoutedProvider(targets, book)
        assert isinstance((await collect(routed))[-1], Done)
        assert routed.served_by is not None
        served[routed.served_by.key] += 1
    assert served["2"] == 0 and served["0"] > 0 and served["1"] > 0
    assert chats(hosts[2]) == 1  # asked once, then left out for that model
    assert MODEL in book.hosts["2"].missing and book.state("2") == "healthy"
    assert all(t.key != "2" for t in book.plan(targets))
    book.record_probe("2", True, latency_ms=1.0, error=None)  # after its next good probe: tried again
    assert any(t.key == "2" for t in book.plan(targets))


async def test_all_hosts_down_gives_one_error_naming_them(
    hosts: list[FakeOllama], client: httpx.AsyncClient
) -> None:
    for fake in hosts:
        fake.stop()
    routed = RoutedProvider(real_targets(hosts, client), HostHealthBook())
    with pytest.raises(ProviderError) as info:
        await collect(routed)
    error = info.value
    assert (error.code, error.status) == ("all_hosts_failed", 502)
    for name in ("host-0", "host-1", "host-2"):
        assert name in error.message
    assert "upstream_unreachable" in error.message


async def test_probe_reports_loaded_models_with_their_vram(
    hosts: list[FakeOllama], client: httpx.AsyncClient
) -> None:
    routed = RoutedProvider(real_targets(hosts[:1], client, (1,)), HostHealthBook())
    await collect(routed)
    result = await probe(client, "ollama", hosts[0].url)
    assert result.ok
    (loaded,) = result.loaded
    assert loaded["name"] == MODEL and isinstance(loaded["size_vram"], int) and loaded["size_vram"] > 0
