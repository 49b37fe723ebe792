"""The ``search`` source: Elasticsearch 7/8/9 and OpenSearch 1/2/3 behind one ``msearch`` call.

The flavor comes from ``GET /`` (or the config's ``flavor``): OpenSearch and
Elasticsearch up to 7.10 (older Amazon domains) use opensearch-py; 7.14 and
later use the elasticsearch client, which refuses OpenSearch. One client, and
so one connection pool, per source.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from watchdog.config import SearchSource as SearchConfig
from watchdog.logfmt import log
from watchdog.redact import cut_body, redact
from watchdog.ruletypes.base import RuleError, SourceUnavailable
from watchdog.sources import packing

logger = logging.getLogger("watchdog.search")

MSEARCH_CHUNK = 100  # searches per _msearch request
# What no rule reads, left out of every _msearch answer (less to send and to parse): each incremental window's
# histogram buckets as dates (their keys are the same in milliseconds) and a flatline's newest event as a date.
# (``_shards`` and ``timed_out`` stay: an answer some shards failed to give is that search's error.)
FILTER_PATH = ",".join(f"-responses.{path}" for path in (
    "took", "**.slices.buckets.key_as_string", "**.last.value_as_string"))


class SearchError(RuleError):
    """A search failed; the message carries the server's reason, ``status`` its HTTP status when it gave one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class SearchUnavailable(SearchError, SourceUnavailable):
    """The cluster could not be reached or did not answer in time."""


def _unanswered(exc: Exception) -> bool:
    """Whether a client exception means no answer at all (both clients name these classes alike)."""
    return any(cls.__name__ in ("ConnectionError", "ConnectionTimeout", "ConnectionTimeoutError", "TimeoutError")
               for cls in type(exc).__mro__)


@dataclass(frozen=True)
class SearchRequest:
    index: str
    body: Mapping[str, Any]
    ignore_unavailable: bool = False


def _reason(error: Any) -> str:
    """The reasons in an Elasticsearch/OpenSearch error object, outermost first (at most three)."""
    if not isinstance(error, Mapping):
        return str(error)
    reasons: list[str] = []

    def add(node: Any) -> None:
        if isinstance(node, Mapping) and node.get("reason"):
            text = str(node["reason"])
            if text not in reasons:
                reasons.append(text)

    roots = error.get("root_cause")
    if isinstance(roots, list) and roots:
        add(roots[0])
    node: Any = error
    while isinstance(node, Mapping):
        add(node)
        failed = node.get("failed_shards")
        if isinstance(failed, list) and failed and isinstance(failed[0], Mapping):
            add(failed[0].get("reason"))
        node = node.get("caused_by")
    reasons = [r for r in reasons if r != "all shards failed"] or reasons
    return ": ".join(reasons[:3]) or str(error.get("type") or "unknown error")


def _checked(response: Any) -> Mapping[str, Any] | SearchError:
    """One search's part of an ``_msearch`` answer, or its error: refused, timed out, or some shards not answering.

    A partial answer would count too few events (and, kept in an incremental
    window's buckets, for as long as the window): it is an error, so the rule
    says it could not check and the next evaluation reads that time again.
    """
    if not isinstance(response, Mapping):
        return SearchError("the cluster's answer to this search is not an object")
    if "error" in response:
        status = response.get("status")
        return SearchError(_reason(response["error"]) or "the cluster refused the search (no reason given)",
                           status if isinstance(status, int) else None)
    if response.get("timed_out") is True:
        return SearchError("the search timed out on the cluster (a partial answer)")
    shards = response.get("_shards")
    if not isinstance(shards, Mapping):
        return response
    failed = shards.get("failed")
    if isinstance(failed, int) and failed > 0:
        failures = shards.get("failures")
        first = failures[0].get("reason") if isinstance(failures, list) and failures and isinstance(failures[0], Mapping) \
            else None
        reason = f": {_reason(first)}" if first is not None else ""
        return SearchError(f"{failed} of {shards.get('total', '?')} shards failed (a partial answer){reason}")
    return response


def _version_tuple(number: str) -> tuple[int, ...]:
    parts = []
    for part in number.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


# Connections kept per source: one per batch that may search it at once (each rule type is its own batch, and
# test-rule and the daemon share nothing). urllib3's default of 1 made concurrent batches log "Connection pool is
# full, discarding connection" and reconnect; elasticsearch-py already keeps 10 per node.
POOL_SIZE = 10


T = TypeVar("T")


def at_once(calls: Sequence[Callable[[], T]], limit: int) -> list[T]:
    """Run ``calls`` concurrently, at most ``limit`` at a time; returns their results in order.

    Raises the first call's exception (in order) once every call has returned.
    Daemon threads, not a ThreadPoolExecutor: the interpreter joins an
    executor's threads at exit, so a stop (SIGTERM) would wait for a search
    the cluster holds; a daemon thread is abandoned with its search.
    """
    slots = threading.Semaphore(limit)
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        with slots:
            try:
                results[index] = calls[index]()
            except BaseException as exc:  # raised in the caller's thread below
                errors[index] = exc

    threads = [threading.Thread(target=run, args=(i,), name="msearch", daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results  # type: ignore[return-value]  # every slot is filled when no call raised


class SearchSource:
    def __init__(self, config: SearchConfig, *, node_class: Any = None):
        self.config = config
        self.node_class = node_class  # tests: an elasticsearch node class for servers that answer as OpenSearch
        self.client: Any = None
        self.flavor: str | None = None
        self.version: str | None = None
        self.lock = threading.Lock()
        self.refusals = packing.Refusals()  # searches sent alone: they failed when their pack was refused

    # --- clients ---------------------------------------------------------------------

    def _opensearch(self) -> Any:
        from opensearchpy import OpenSearch, RequestsHttpConnection

        cfg = self.config
        kwargs: dict[str, Any] = {"hosts": list(cfg.hosts), "timeout": cfg.timeout.total_seconds(),
                                  "verify_certs": cfg.verify_certs, "ssl_show_warn": cfg.verify_certs,
                                  "max_retries": 0, "retry_on_timeout": False, "pool_maxsize": POOL_SIZE}
        if cfg.ca_certs:
            kwargs["ca_certs"] = cfg.ca_certs
        if cfg.aws_region:
            import boto3
            from opensearchpy import RequestsAWSV4SignerAuth

            credentials = boto3.Session(profile_name=cfg.aws_profile).get_credentials()
            kwargs["http_auth"] = RequestsAWSV4SignerAuth(credentials, cfg.aws_region, cfg.aws_service)
            kwargs["connection_class"] = RequestsHttpConnection
        elif cfg.username:
            kwargs["http_auth"] = (cfg.username, cfg.password or "")
        elif cfg.api_key:
            kwargs["headers"] = {"Authorization": f"ApiKey {cfg.api_key}"}
        return OpenSearch(**kwargs)

    def _elasticsearch(self) -> Any:
        from elasticsearch import Elasticsearch

        cfg = self.config
        kwargs: dict[str, Any] = {"hosts": list(cfg.hosts), "request_timeout": cfg.timeout.total_seconds(),
                                  "verify_certs": cfg.verify_certs, "max_retries": 0, "retry_on_timeout": False}
        if cfg.ca_certs:
            kwargs["ca_certs"] = cfg.ca_certs
        if cfg.username:
            kwargs["basic_auth"] = (cfg.username, cfg.password or "")
        elif cfg.api_key:
            kwargs["api_key"] = cfg.api_key
        if self.node_class is not None:
            kwargs["node_class"] = self.node_class
        return Elasticsearch(**kwargs)

    def _detect(self) -> None:
        """Pick the client from the config's flavor or from GET /."""
        flavor = self.config.flavor
        if flavor == "auto":
            probe = self._opensearch()
            try:
                info = probe.info()
            except Exception as exc:
                hosts = ", ".join(redact(host) for host in self.config.hosts)
                raise SearchUnavailable(f"cannot reach {hosts}: {redact(self._describe(exc))}") from None
            version = info.get("version", {})
            self.version = str(version.get("number", ""))
            if version.get("distribution") == "opensearch" or _version_tuple(self.version) < (7, 14):
                flavor, self.client = "opensearch", probe
            else:
                flavor = "elasticsearch"
                probe.close()
        if flavor == "opensearch" and self.client is None:
            self.client = self._opensearch()
        elif flavor == "elasticsearch":
            self.client = self._elasticsearch()
        self.flavor = flavor
        log(logger, logging.INFO, "search source ready", source=self.config.name, flavor=flavor, version=self.version)

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.close()
                self.client = None

    @staticmethod
    def _describe(exc: Exception) -> str:
        info = getattr(exc, "info", None) or getattr(exc, "body", None)
        if isinstance(info, Mapping) and "error" in info:
            return _reason(info["error"])
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "meta", None), "status", None)
        text = cut_body(str(exc).split("\n")[0], 300)  # a failed answer's body may be a whole HTML page
        return f"HTTP {status}: {text}" if isinstance(status, int) else f"{type(exc).__name__}: {text}"

    def multi_terms(self) -> bool:
        """Whether the cluster has the ``multi_terms`` aggregation (OpenSearch 2.1+, Elasticsearch 7.12+).

        Detects the flavor first when needed; a cluster that cannot be reached
        answers True (the search that follows reports the failure). With a
        configured flavor and no version known, Elasticsearch (7.14+ by
        construction) has it, OpenSearch is not assumed to.
        """
        with self.lock:
            if self.client is None:
                try:
                    self._detect()
                except SearchError:
                    return True
        if not self.version:
            return self.flavor == "elasticsearch"
        version = _version_tuple(self.version)
        return version >= (2, 1) if self.flavor == "opensearch" and version < (7,) else version >= (7, 12)

    # --- searching ------------------------------------------------------------------------

    def msearch(self, requests: Sequence[SearchRequest]) -> list[Mapping[str, Any] | SearchError]:
        """Run every request; returns one response or SearchError per request, in order.

        Searches that read the same time ranges of the same indices go as one
        packed search (see ``packing``); a packed search the cluster refuses is
        sent again unpacked, so one bad search fails only itself. Raises
        SearchError when the cluster cannot be reached at all.
        """
        packs = packing.pack(requests, self.refusals)
        answers = self._send([replace(requests[p.members[0]], body=p.body) for p in packs])
        out: list[Mapping[str, Any] | SearchError | None] = [None] * len(requests)
        again: list[tuple[int, ...]] = []
        for packed, answer in zip(packs, answers, strict=True):
            if len(packed.members) == 1 or isinstance(answer, SearchError):
                if len(packed.members) > 1 and isinstance(answer, SearchError) and answer.status in (None, 400):
                    again.append(packed.members)  # refused for what it holds (a bad query, a limit): each alone
                else:  # (alone; or a busy, failing or timed-out cluster: asking 50 times more would not help)
                    for member in packed.members:
                        out[member] = answer
                continue
            try:
                for member, response in zip(packed.members, packing.unpack(packed, answer), strict=True):
                    out[member] = response
            except (KeyError, TypeError, ValueError):  # an answer without a member's part: ask each alone
                again.append(packed.members)
        if again:
            alone = [member for members in again for member in members]
            answered = dict(zip(alone, self._send([requests[m] for m in alone]), strict=True))
            for members in again:
                failed = [m for m in members if isinstance(answered[m], SearchError)]
                # What failed alone goes alone from now on; a pack refused though each of its searches is fine
                # (a limit of the cluster's) is not made again either.
                for member in failed or members:
                    self.refusals.add(requests[member])
                if not failed:
                    log(logger, logging.INFO, "packed search refused, its searches go alone", source=self.config.name,
                        searches=len(members))
            for member, alone_answer in answered.items():
                out[member] = alone_answer
        return [SearchError("no answer") if response is None else response for response in out]  # (every one has one)

    def _send(self, requests: Sequence[SearchRequest]) -> list[Mapping[str, Any] | SearchError]:
        """Run every request, ``MSEARCH_CHUNK`` per ``_msearch`` call, the calls at once (at most ``POOL_SIZE``).

        Sent together, every search of a cycle sees the same events: one after
        another, the later calls went out seconds after the cycle's moment and a
        burst that landed meanwhile waited a whole cycle. Returns one response or
        SearchError per request, in order. Raises SearchError when the cluster
        cannot be reached at all (the client is rebuilt on the next call).
        """
        chunks = [requests[start:start + MSEARCH_CHUNK] for start in range(0, len(requests), MSEARCH_CHUNK)]
        if len(chunks) <= 1:
            return [r for chunk in chunks for r in self._msearch_chunk(chunk)]
        with self.lock:
            if self.client is None:
                self._detect()  # once, before the calls share the client
        out: list[Mapping[str, Any] | SearchError] = []
        for answers in at_once([partial(self._msearch_chunk, chunk) for chunk in chunks], POOL_SIZE):
            out += answers
        return out

    def _msearch_chunk(self, chunk: Sequence[SearchRequest]) -> list[Mapping[str, Any] | SearchError]:
        """One ``_msearch`` call: a response or SearchError per request; raises when the cluster does not answer."""
        out: list[Mapping[str, Any] | SearchError] = []
        lines: list[Mapping[str, Any]] = []
        for request in chunk:
            header: dict[str, Any] = {"index": request.index}
            if request.ignore_unavailable:
                header.update(ignore_unavailable=True, allow_no_indices=True)
            lines += [header, request.body]
        with self.lock:
            if self.client is None:
                self._detect()
            client = self.client
        try:
            if self.flavor == "elasticsearch":
                answer = client.msearch(searches=lines, filter_path=FILTER_PATH)
            else:
                answer = client.msearch(body=lines, filter_path=FILTER_PATH)
        except Exception as exc:
            with self.lock:
                if self.client is client:
                    self.client = None
                    client.close()
            error = SearchUnavailable if _unanswered(exc) else SearchError
            raise error(f"search failed: {redact(self._describe(exc))}") from None
        body = answer.body if hasattr(answer, "body") else answer
        responses = body.get("responses") if isinstance(body, Mapping) else None
        for response in (responses if isinstance(responses, list) else [])[:len(chunk)]:
            out.append(_checked(response))
        # (an answer with fewer responses than searches: the missing ones are their searches' errors)
        out += [SearchError("the cluster gave no answer to this search")] * (len(chunk) - len(out))
        return out
