"""Plane geometry in normalised image coordinates (x right, y down, both in [0, 1]).

Plain-Python math on tuples: the rules call these per detection per frame, where the cost of
building numpy arrays for a handful of points is larger than the arithmetic itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]


def cross(a: Point, b: Point, p: Point) -> float:
    """z of (b - a) x (p - a): > 0 when p lies to the right of a->b as drawn on the image (y down)."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _orient(a: Point, b: Point, c: Point) -> int:
    v = cross(a, b, c)
    return 0 if abs(v) < 1e-12 else (1 if v > 0 else -1)


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """True when segment p1-p2 touches segment q1-q2 (end points and collinear overlap included)."""
    o1, o2 = _orient(p1, p2, q1), _orient(p1, p2, q2)
    o3, o4 = _orient(q1, q2, p1), _orient(q1, q2, p2)
    if o1 != o2 and o3 != o4:
        return True
    return (
        (o1 == 0 and _on_segment(p1, p2, q1))
        or (o2 == 0 and _on_segment(p1, p2, q2))
        or (o3 == 0 and _on_segment(q1, q2, p1))
        or (o4 == 0 and _on_segment(q1, q2, p2))
    )


def polygon_area(points: Sequence[Point]) -> float:
    """Unsigned area (shoelace formula)."""
    s = 0.0
    n = len(points)
    for i in range(n):
        x1, y1 = points[i]
        x2, y2 = points[(i + 1) % n]
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0


def self_intersects(points: Sequence[Point]) -> bool:
    """True when two non-adjacent edges of the closed polygon cross (a 'bow-tie' zone).

    Every pair of edges, as numpy arrays: the same arithmetic as :func:`segments_intersect` pair
    by pair (same operations in the same order, same tolerance), ~100x faster than a Python loop
    over the pairs. It runs once per zone when a rule is validated, not per frame; a zone's
    points are bounded (``alerts.rules.config.MAX_ZONE_POINTS``), so is the cost."""
    n = len(points)
    if n < 4:
        return False  # a triangle's edges are all adjacent
    a = np.asarray(points, dtype=np.float64).reshape(n, 2)
    b = np.roll(a, -1, axis=0)  # edge k runs from a[k] to b[k]
    i, j = np.triu_indices(n, k=2)  # pairs of edges that are not neighbours ...
    keep = ~((i == 0) & (j == n - 1))  # ... the last edge and the first are neighbours too
    i, j = i[keep], j[keep]
    p1, p2, q1, q2 = a[i], b[i], a[j], b[j]

    def orient(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        c = (v[:, 0] - u[:, 0]) * (w[:, 1] - u[:, 1]) - (v[:, 1] - u[:, 1]) * (w[:, 0] - u[:, 0])
        return np.where(np.abs(c) < 1e-12, 0, np.sign(c))

    def on_segment(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        return (
            (np.minimum(u[:, 0], v[:, 0]) <= w[:, 0])
            & (w[:, 0] <= np.maximum(u[:, 0], v[:, 0]))
            & (np.minimum(u[:, 1], v[:, 1]) <= w[:, 1])
            & (w[:, 1] <= np.maximum(u[:, 1], v[:, 1]))
        )

    o1, o2 = orient(p1, p2, q1), orient(p1, p2, q2)
    o3, o4 = orient(q1, q2, p1), orient(q1, q2, p2)
    crossing = (o1 != o2) & (o3 != o4)
    touching = (
        ((o1 == 0) & on_segment(p1, p2, q1))
        | ((o2 == 0) & on_segment(p1, p2, q2))
        | ((o3 == 0) & on_segment(q1, q2, p1))
        | ((o4 == 0) & on_segment(q1, q2, p2))
    )
    return bool((crossing | touching).any())


class Polygon:
    """A zone compiled once for fast point-in-polygon tests (bounding-box reject, then ray casting)."""

    __slots__ = ("points", "minx", "miny", "maxx", "maxy", "is_rect", "_edges")

    def __init__(self, points: Sequence[Sequence[float]]):
        pts = tuple((float(x), float(y)) for x, y in points)
        if len(pts) < 3:
            raise ValueError("polygon needs at least 3 points")
        self.points: tuple[Point, ...] = pts
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        self.minx, self.maxx, self.miny, self.maxy = min(xs), max(xs), min(ys), max(ys)
        # An axis-aligned rectangle (the most common zone) needs only the bounding-box test.
        self.is_rect = len(pts) == 4 and len(set(xs)) == 2 and len(set(ys)) == 2
        edges = []
        for i in range(len(pts)):
            (x1, y1), (x2, y2) = pts[i], pts[(i + 1) % len(pts)]
            if y1 != y2:  # horizontal edges never cross a horizontal ray
                edges.append((y1, y2, x1, (x2 - x1) / (y2 - y1)))
        self._edges = tuple(edges)

    def contains(self, x: float, y: float) -> bool:
        if x < self.minx or x > self.maxx or y < self.miny or y > self.maxy:
            return False
        if self.is_rect:
            return True
        inside = False
        for y1, y2, x1, k in self._edges:
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * k:
                inside = not inside
        return inside

    def to_list(self) -> list[list[float]]:
        return [[x, y] for x, y in self.points]
