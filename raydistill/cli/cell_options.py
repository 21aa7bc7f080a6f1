"""The student-cell options of the CLI, written once: `--family`, `--depth`, `--budget`,
`--ratios` (a family at a depth under a budget), taken by `budget` and `train` as one
typed parameter (`cell: StudentCell`), an option group like `raydistill.cli.data_options`.
The check imports neither torch nor Ray.
"""

# No `from __future__ import annotations`: jsonargparse must see the Annotated validators.
from dataclasses import dataclass

from raydistill.cli.args import Budget, Count, Floats
from raydistill.core.errors import UserError


@dataclass
class StudentCell:
    """The student: a family at a depth under a budget (parameters, MACs or latency).

    Args:
        family: a student family (raydistill families)
        depth: its depth
        budget: 300k, 1M (parameters), 40M-macs (MACs per image), 2ms or 2ms-cuda-b64 (latency per image)
        ratios: width ratios in [0,1], one per width slot, comma-separated
    """

    family: str
    depth: Count
    budget: Budget
    ratios: Floats | None = None

    def check(self) -> None:
        """Refuse an unknown family or depth (from the source index) or a ratio outside [0, 1]."""
        from raydistill.cli.pipeline import check_family

        check_family(self.family, self.depth, "student")
        if self.ratios is not None and not all(0 <= r <= 1 for r in self.ratios):
            raise UserError(f"--ratios {self.ratios} is invalid; every ratio must be in [0, 1]")
