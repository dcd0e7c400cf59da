"""Painting sessions: one per browser tab, each with its own image, features and history of edits.

A session's state is the painted layer's features and the image the page shows. An edit runs the
studio's `paint` (an `Intervention` restricted to the brushed region, the code path of
`gantools edit`) on the current features, and pastes the regenerated pixels into the current image
only inside the region: outside it nothing changes, so a real image keeps its own pixels there, and
edits compose (each one starts from the features the last one left). Every state is kept, so undo
and redo return to earlier images exactly.

    studio = open_studio("scenes64")
    sessions = SessionStore(studio, start_state(studio, seed=0))
    session = sessions.create()
    state = session.apply(region, "tree", "remove", strength=1.0)   # region: S x S bool
"""

from __future__ import annotations

import base64
import io
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from ..utils import GantoolsError, Progress
from .studio import PaintStudio

# Concept share inside the brushed region below which a concept counts as absent there, and the
# least gain inside it that counts as "the concept appeared".
ABSENT = 0.005
APPEARED = 0.02


@dataclass
class PaintState:
    """One step of a session's history.

    Attributes:
        features: the painted layer's features (1 x C x h x w, CPU).
        image: what the page shows (uint8 C x S x S).
        labels: the segmenter's labels of `image` (S x S).
        source: where the image came from ("sample 3", "photo.png, inverted: PSNR 21.4 dB").
        change: what the edit that led here changed (`describe_change`), None for a fresh image.
        seed: the sample's seed (None for a real image).
    """

    features: torch.Tensor
    image: torch.Tensor
    labels: torch.Tensor
    source: str
    change: dict[str, Any] | None = None
    seed: int | None = None


def sample_state(studio: PaintStudio, seed: int) -> PaintState:
    """A fresh generated image: the sample of `seed`."""
    features = studio.sample(seed)
    image = studio.render(features)
    return PaintState(features, image, studio.labels(image), f"sample {int(seed)}", seed=int(seed))


def image_state(studio: PaintStudio, image: torch.Tensor, name: str = "image",
                progress: Any = None) -> PaintState:
    """A real image (uint8 C x S x S), inverted layer-wise; the page shows its own pixels."""
    features, quality = studio.invert(image, name, progress)
    return PaintState(features, image, studio.labels(image), f"{name}, inverted layer-wise: PSNR {quality:.1f} dB")


def png_data_uri(image: torch.Tensor) -> str:
    """A uint8 C x H x W image as a lossless PNG data URI."""
    from PIL import Image

    arr = image.detach().cpu().permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[:, :, 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def describe_change(studio: PaintStudio, before: PaintState, labels: torch.Tensor, region: torch.Tensor,
                    concept: str, action: str, strength: float, units: list[int], notes: list[str]) -> dict[str, Any]:
    """What an edit changed: each concept's pixel fraction before and after (as edit.json has it), the
    edited concept's share inside the region, and a note when it was absent there or did not appear."""
    k = studio.check_concept(concept)
    old, new = studio.fractions(before.labels), studio.fractions(labels)
    inside = region.bool()
    area = max(1, int(inside.sum()))
    in_before = float((before.labels[inside] == k).sum()) / area
    in_after = float((labels[inside] == k).sum()) / area
    counts = torch.bincount(before.labels[inside].flatten(), minlength=len(studio.concepts))
    context = studio.concepts[int(counts.argmax())]
    note = None
    if action == "remove" and in_before < ABSENT:
        note = f"there was no {concept} in the brushed region ({context} there): nothing to remove"
    elif action == "remove" and in_after >= in_before:
        note = f"the {concept} stayed: its units at {studio.layer} do not draw it here"
    elif action == "add" and in_before > 1 - ABSENT:
        note = f"the brushed region was already all {concept}"
    elif action == "add" and in_after - in_before < APPEARED:
        note = (f"no {concept} appeared: the generator does not draw {concept} in that context "
                f"({context}); it is not possible there")
    return {"action": action, "concept": concept, "strength": strength, "layer": studio.layer, "units": units,
            "region_fraction": float(inside.float().mean()), "context": context,
            "inside": {"before": in_before, "after": in_after},
            "fractions": {c: {"before": old[i], "after": new[i]} for i, c in enumerate(studio.concepts)},
            "change": new[k] - old[k], "note": note, "notes": notes}


class PaintSession:
    """One browser tab's painting: the current state, its history, and an upload's progress.

    Args:
        studio: the shared model side.
        session_id: the id the page sends with each request.
        start: the first state (shared states are never modified, so one can start many sessions).
    """

    def __init__(self, studio: PaintStudio, session_id: str, start: PaintState) -> None:
        self.studio = studio
        self.id = session_id
        self.lock = threading.RLock()
        self.history: list[PaintState] = [start]
        self.position = 0
        self.job: dict[str, Any] = {"running": False}

    @property
    def state(self) -> PaintState:
        return self.history[self.position]

    def _reset(self, state: PaintState) -> PaintState:
        self.history, self.position = [state], 0
        return state

    def new_sample(self, seed: int) -> PaintState:
        """Start again from the generated sample of `seed` (the history is cleared)."""
        with self.lock:
            return self._reset(sample_state(self.studio, seed))

    def load_image(self, image: torch.Tensor, name: str = "image") -> PaintState:
        """Start again from a real image (uint8 C x S x S), inverted layer-wise; `job` reports the progress."""
        with self.lock:
            self.job = {"running": True, "task": "inverting", "completed": 0, "total": None, "message": None}
            try:
                state = image_state(self.studio, image, name, self._progress)
            finally:
                self.job = {**self.job, "running": False}
            return self._reset(state)

    def _progress(self, p: Progress) -> None:
        self.job = {"running": True, "task": p.task, "completed": p.completed, "total": p.total,
                    "message": p.message or self.job.get("message")}

    def apply(self, region: torch.Tensor, concept: str, action: str, strength: float) -> PaintState:
        """Add or remove a concept inside the region (S x S bool); the new state is the current one.

        The regenerated pixels are pasted into the current image only inside the region.
        """
        region = region.bool()
        size = self.studio.size
        if tuple(region.shape) != (size, size):
            raise GantoolsError(f"the region must be {size} x {size} pixels, got {tuple(region.shape)}")
        if not bool(region.any()):
            raise GantoolsError("the region selects no pixels: brush over the image first")
        with self.lock:
            before = self.state
            painted = self.studio.paint(before.features, region, concept, action, strength)
            image = torch.where(region[None], painted.raw, before.image)
            labels = self.studio.labels(image)
            change = describe_change(self.studio, before, labels, region, concept, action, float(strength),
                                     painted.units, painted.notes)
            state = PaintState(painted.features, image, labels, before.source, change, before.seed)
            self.history = self.history[:self.position + 1] + [state]
            drop = max(0, len(self.history) - 1 - self.studio.settings.history)
            self.history = self.history[drop:]
            self.position = len(self.history) - 1
            return state

    def undo(self) -> PaintState:
        """Back to the state before the last edit (exactly)."""
        with self.lock:
            if self.position == 0:
                raise GantoolsError("nothing to undo")
            self.position -= 1
            return self.state

    def redo(self) -> PaintState:
        """Forward to the edit undone last."""
        with self.lock:
            if self.position >= len(self.history) - 1:
                raise GantoolsError("nothing to redo")
            self.position += 1
            return self.state

    def view(self) -> dict[str, Any]:
        """The state as the page needs it (JSON-ready): image, history position, what changed."""
        with self.lock:
            state, position, steps = self.state, self.position, len(self.history)
        # The panel shows what the step that led to the current image changed.
        return {"session": self.id, "image": png_data_uri(state.image), "source": state.source, "seed": state.seed,
                "step": position, "steps": steps, "can_undo": position > 0, "can_redo": position < steps - 1,
                "change": state.change,
                "fractions": dict(zip(self.studio.concepts, self.studio.fractions(state.labels)))}


@dataclass
class SessionStore:
    """The sessions of one server, the least recently used dropped beyond `studio.settings.max_sessions`.

    Args:
        studio: the shared model side.
        start: the state a new session starts from.
    """

    studio: PaintStudio
    start: PaintState
    _sessions: OrderedDict[str, PaintSession] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self) -> PaintSession:
        """A new session (its id is unguessable: other pages on the machine cannot use it)."""
        session = PaintSession(self.studio, secrets.token_urlsafe(16), self.start)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.studio.settings.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> PaintSession:
        """The session with that id; KeyError when there is none (the server restarted, or it was dropped)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise KeyError(session_id)
            self._sessions.move_to_end(session_id)
            return session

    def __len__(self) -> int:
        return len(self._sessions)
