"""`jestflow data check SPLIT...`: read every shard of some splits before spending compute on them.

Per split: the shards and samples read, bad samples by reason, shards that cannot be read (named, with
the byte offset the reader gives), duplicate uids within and across shards, and for an evaluation
split whether the labels fit its classes.json. `problems` lists what would make a later stage fail or
lose data; the command exits non-zero when there is any.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import storage
from ..config import MAX_BAD_FRACTION
from .classes import label_of, read_classes
from .shards import ReadStats, iter_shard, list_shards


@dataclass
class SplitReport:
    uri: str
    shards: int = 0
    samples: int = 0
    skipped: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    classes: int | None = None  # len(classes.json), when the split has one

    def lines(self, max_bad_fraction: float) -> list[str]:
        seen = self.samples + sum(self.skipped.values())
        bad = sum(self.skipped.values())
        out = [f"{self.uri}: {self.shards} shards, {self.samples} samples read"]
        if self.skipped:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
            out.append(f"  bad samples skipped: {bad} of {seen} ({reasons}); max_bad_fraction {max_bad_fraction}")
        if self.classes is not None:
            out.append(f"  classes.json: {self.classes} classes")
        out += [f"  PROBLEM: {p}" for p in self.problems]
        return out


def check_split(
    uri: str, max_bad_fraction: float = MAX_BAD_FRACTION, image_size: int | None = None, limit: int = 20
) -> SplitReport:
    """Read every shard of split `uri`; never raises for what it finds (at most `limit` problems listed)."""
    report = SplitReport(uri)
    try:
        shards = list_shards(uri)
    except ValueError as e:
        report.problems.append(str(e))
        return report
    try:
        classes = read_classes(uri)
    except ValueError as e:  # the evaluation would refuse it: a problem, and no labels to check against
        report.problems.append(str(e))
        classes = None
    report.classes = len(classes.names) if classes else None
    stats = ReadStats(max_bad_fraction=max_bad_fraction)  # counts everything; judged once read, below
    owner: dict[str, str] = {}
    problems: list[str] = []
    for shard in shards:
        report.shards += 1
        try:
            for s in iter_shard(shard, stats, image_size):
                if s.uid in owner:
                    first, again = storage.basename(owner[s.uid]), storage.basename(shard)
                    problems.append(f"duplicate uid {s.uid!r} in shards {first} and {again}")
                owner[s.uid] = shard
                if classes:
                    try:
                        label_of(s, classes)
                    except ValueError as e:
                        problems.append(f"{storage.basename(shard)}: {e}")
        except ValueError as e:  # an unreadable shard: named, with the offset
            problems.append(str(e))
    report.samples, report.skipped = stats.samples, dict(stats.skipped)
    try:
        stats.judge(f"split {uri}")  # the rule every stage applies (shards.judge_bad)
    except ValueError as e:
        problems.append(f"{e}: scoring, training or evaluating this split would stop")
    report.problems = report.problems + problems[:limit]
    if len(problems) > limit:
        report.problems.append(f"... and {len(problems) - limit} more problems")
    return report


def check(uris: list[str], max_bad_fraction: float = MAX_BAD_FRACTION, image_size: int | None = None, log=print) -> int:
    """Check each split, print its report; 1 if any has a problem, else 0."""
    bad = 0
    for uri in uris:
        r = check_split(uri, max_bad_fraction, image_size)
        for line in r.lines(max_bad_fraction):
            log(line)
        bad += bool(r.problems)
    log(f"{len(uris) - bad} of {len(uris)} splits fine" + (f"; {bad} with problems (see PROBLEM lines)" if bad else ""))
    return 1 if bad else 0
