"""What routes get injected (full-stack-fastapi-template style ``Annotated`` aliases).

The app factory puts one :class:`AppState` on ``app.state``; routes ask for the parts they need.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from fhir_adapter.ingest.runner import Clock
from fhir_adapter.mappings import load_mappings
from fhir_adapter.measure.spec import Mappings
from fhir_adapter.settings import Settings
from fhir_adapter.store.db import Store


@dataclass
class Caller:
    """Who is calling. Until SMART Backend Services authorisation is switched on, every caller
    is the anonymous client whose pushes are stored under ``settings.api_default_source``."""

    client_id: str
    source: str
    role: str = "anonymous"
    ccos: tuple[str, ...] = ()


@dataclass
class AppState:
    settings: Settings
    store: Store
    clock: Clock
    _mappings: Mappings | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def mappings(self) -> Mappings:
        """Loaded once per process (``reload_mappings`` after an import)."""
        with self._lock:
            if self._mappings is None:
                self._mappings = load_mappings(self.settings.mappings_dir)
            return self._mappings

    def reload_mappings(self) -> None:
        with self._lock:
            self._mappings = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.adapter
    return state


def get_settings(request: Request) -> Settings:
    return get_state(request).settings


def get_store(request: Request) -> Store:
    return get_state(request).store


def get_mappings(request: Request) -> Mappings:
    return get_state(request).mappings


def get_caller(request: Request) -> Caller:
    settings = get_state(request).settings
    return Caller(client_id="anonymous", source=settings.api_default_source)


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
MappingsDep = Annotated[Mappings, Depends(get_mappings)]
CallerDep = Annotated[Caller, Depends(get_caller)]
