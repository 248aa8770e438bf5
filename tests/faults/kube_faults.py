"""Kubernetes API faults injected into kmock's emulator with its reaction DSL.

A reaction answers a matching request with a Kubernetes `Status` error. kmock's emulator stores
a write before any reaction is consulted (its objects stay available for assertions); a real API
server that answers 403, or 503 from its front, never stored it. So unless `landed=True` (the
harder case: a 5xx whose write did happen), the reaction also puts the stored object back as it
was, and the emulator then looks exactly like a server that refused the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kmock

from tests.peers import RESOURCES as SERVED
from tests.peers import KubernetesPeer

ACTIONS = {"create": kmock.action.CREATE, "patch": kmock.action.UPDATE, "delete": kmock.action.DELETE,
           "get": kmock.action.FETCH, "list": kmock.action.LIST}
RESOURCES = {key.rsplit("/", 1)[1]: kmock.resource(key) for key in SERVED}
REASONS = {403: "Forbidden", 409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


@dataclass
class Fault:
    verb: str
    plural: str
    status: int
    answered: list[Any] = field(default_factory=list)
    """The requests this fault answered (kmock Request objects)."""


class KubeFaults:
    """Faults for one test's namespace; `clear()` (or leaving `installed()`) removes every reaction."""

    def __init__(self, kube: KubernetesPeer, namespace: str) -> None:
        self._kube, self._ns = kube, namespace
        self._reactions: list[Any] = []

    def refuse(self, verb: str, plural: str, status: int, *, times: int | None = None, skip: int = 0,
               landed: bool = False) -> Fault:
        """Answer `verb` on `plural` with `status`; only `times` such requests when given, after letting the
        first `skip` through."""
        fault = Fault(verb, plural, status)

        def answer(request: kmock.Request) -> None:
            fault.answered.append(request)
            if not landed:
                self._undo(request)
            raise kmock.KubernetesError(status=status, reason=REASONS.get(status, "Failure"),
                                        message=f"injected: {verb} {plural} answered {status}")

        def install() -> Any:
            assert self._kube.emulator is not None
            view = self._kube.emulator[ACTIONS[verb], RESOURCES[plural], kmock.namespace(self._ns)]
            if times is not None or skip:
                view = view[skip:None if times is None else skip + times]
            return view << answer

        self._reactions.append(self._kube.call(install))
        return fault

    def clear(self) -> None:
        def remove() -> None:
            assert self._kube.emulator is not None
            # kmock has no public way to withdraw a reaction; its root keeps them in this list.
            payloads = self._kube.emulator._payloads
            payloads[:] = [p for p in payloads if all(p is not r for r in self._reactions)]

        self._kube.call(remove)
        self._reactions.clear()

    @contextmanager
    def installed(self) -> Iterator[KubeFaults]:
        try:
            yield self
        finally:
            self.clear()

    def _undo(self, request: kmock.Request) -> None:
        """Put back the object as it was before this (refused) write; runs on the emulator's loop."""
        assert self._kube.emulator is not None
        if request.action not in (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE):
            return
        name = request.name or ((request.data or {}).get("metadata") or {}).get("name")
        for (resource, namespace, obj_name), obj in self._kube.emulator.objects.items():
            if resource.plural == request.resource.plural and namespace == self._ns and obj_name == name:
                if len(obj.history):
                    obj.history.pop()
                return
