"""Token allocation solvers: choose how many visual tokens each decoder layer keeps.

One problem object (``AllocationProblem``), one result type (``Solution``), one front door
(``solve_problem``), six solvers:

- ``"auto"`` (default): the DP whenever the problem fits it, else CP-SAT; exact.
- ``"dp"``: dynamic programming vectorized in numpy, exact ("sum" aggregate, budget and domain
  constraints; bounded memory; see ``quota.solvers.dp``).
- ``"cpsat"``: OR-Tools CP-SAT, exact (every feature; deterministic with one worker).
- ``"mip"``: OR-Tools pywraplp with SCIP, exact (every feature).
- ``"relax"``: cvxpy LP relaxation with rounding: a lower bound, a schedule and its gap (heuristic).
- ``"greedy"``: greedy marginal-gain baseline (heuristic, no bound).

Every failure is a ``SolverError`` (``quota.solvers.errors``) with a one-line message:
``InfeasibleError`` states the least achievable cost against the budget; ``UnsupportedFeatureError``
names the solver and the feature; ``NoScheduleError``, ``RelaxationLimitError`` and
``GapTooLargeError`` state the time limit, the bound and the gap.

Pairwise ``interactions`` between adjacent layers (``AllocationProblem.interactions``) are solved
exactly by ``dp``, ``cpsat``, ``mip`` and ``auto``; ``relax`` and ``greedy`` refuse them.
``solve_k_best`` returns the k best distinct schedules, exact (``"auto"``, ``"dp"``, ``"cpsat"``;
see ``quota.solvers.kbest``).

Joint precision and token allocation (each layer's precision option and keep count together):
``JointProblem``, ``JointSolution``, ``solve_joint`` with ``"auto"``, ``"dp"`` and ``"cpsat"`` (all exact;
see ``quota.solvers.joint_problem``).

Importing this package loads neither OR-Tools nor cvxpy; the backends import them on first use.
"""

from __future__ import annotations

from quota.solvers.auto import solve_auto
from quota.solvers.constraints import FEAS_RTOL, CostCap, FixedLayer, LinearConstraint, MinKeepBefore
from quota.solvers.cpsat import solve_cpsat
from quota.solvers.dp import MAX_BYTES, solve_dp
from quota.solvers.errors import (
    GapTooLargeError,
    InfeasibleError,
    NoScheduleError,
    ProblemError,
    RelaxationLimitError,
    SolverArgumentError,
    SolverError,
    UnsupportedFeatureError,
)
from quota.solvers.greedy import solve_greedy
from quota.solvers.joint_auto import solve_joint_auto
from quota.solvers.kbest import K_BEST_SOLVERS, solve_k_best
from quota.solvers.joint_constraints import AllowedPrecisions
from quota.solvers.joint_cpsat import solve_joint_cpsat
from quota.solvers.joint_dp import solve_joint_dp
from quota.solvers.joint_problem import JOINT_COST_KINDS, JointProblem
from quota.solvers.joint_solution import JointSolution
from quota.solvers.joint_solve import JOINT_SOLVERS, solve_joint
from quota.solvers.joint_synthetic import synthetic_joint_problem
from quota.solvers.mip import solve_mip
from quota.solvers.problem import COST_KINDS, AllocationProblem, default_grid
from quota.solvers.registry import EXACT_SOLVERS, HEURISTIC_SOLVERS, SOLVERS, solve_problem
from quota.solvers.relax import solve_relax, solve_sweep
from quota.solvers.solution import Solution
from quota.solvers.synthetic import SHAPES, synthetic_problem

__all__ = [
    "COST_KINDS",
    "EXACT_SOLVERS",
    "FEAS_RTOL",
    "HEURISTIC_SOLVERS",
    "JOINT_COST_KINDS",
    "JOINT_SOLVERS",
    "K_BEST_SOLVERS",
    "MAX_BYTES",
    "SHAPES",
    "SOLVERS",
    "AllocationProblem",
    "AllowedPrecisions",
    "CostCap",
    "FixedLayer",
    "GapTooLargeError",
    "InfeasibleError",
    "JointProblem",
    "JointSolution",
    "LinearConstraint",
    "MinKeepBefore",
    "NoScheduleError",
    "ProblemError",
    "RelaxationLimitError",
    "Solution",
    "SolverArgumentError",
    "SolverError",
    "UnsupportedFeatureError",
    "default_grid",
    "solve_problem",
    "solve_auto",
    "solve_cpsat",
    "solve_dp",
    "solve_greedy",
    "solve_joint",
    "solve_joint_auto",
    "solve_joint_cpsat",
    "solve_joint_dp",
    "solve_k_best",
    "solve_mip",
    "solve_relax",
    "solve_sweep",
    "synthetic_joint_problem",
    "synthetic_problem",
]
