"""Running the grid's jobs: in this process, on N local workers, or as SLURM job arrays.

Work comes in two stages. Stage 1 trains the shared, expensive models (originals and the
retrained model of each split), each exactly once; stage 2 computes the cells, which then
only load those models. Every job of a stage is a *worker* over the stage's whole list: it
claims an item by taking the item's file lock without waiting, skips items another worker
holds or has finished, and computes the rest. So any number of workers, started in any order
or again after a kill, computes each missing item once; results do not depend on which
worker computed them.
"""

from __future__ import annotations

from launch.jobs import CellJob, ModelJob
from launch.options import LaunchOptions, parse_options
from launch.run import Outcome, dry_run, run

__all__ = ["CellJob", "LaunchOptions", "ModelJob", "Outcome", "dry_run", "parse_options", "run"]
