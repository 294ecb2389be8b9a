"""In-process, virtual-time cluster: simulated engine cores with the real scheduler and plugins in the loop."""

from llmd_kserve.cluster_sim.engines import pd_roles
from llmd_kserve.cluster_sim.options import SimOptions, SimRun
from llmd_kserve.cluster_sim.run import run_bench, sim_entry, simulate
from llmd_kserve.cluster_sim.sim import ClusterSim

__all__ = ["ClusterSim", "SimOptions", "SimRun", "pd_roles", "run_bench", "sim_entry", "simulate"]
