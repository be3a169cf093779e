"""The detector's output, independent of the model library that produced it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Detection:
    class_id: int
    label: str
    confidence: float
    box: tuple[float, float, float, float]  # normalised x1, y1, x2, y2 in [0, 1]
    track_id: int | None = None

    def to_dict(self) -> dict:
        d = {
            "class_id": self.class_id,
            "label": self.label,
            "confidence": round(float(self.confidence), 4),
            "box": [round(float(v), 5) for v in self.box],
        }
        if self.track_id is not None:
            d["track_id"] = int(self.track_id)
        return d
