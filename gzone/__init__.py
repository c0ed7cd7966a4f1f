"""gzone: the geometry of neural-network loss landscapes in JAX.

    import gzone
    result = gzone.radius_scan(model, x, y, r_over_rx=[0.1, 1, 10], dims=[10, 50], num_seeds=3, seed=0)
    print(result.table()); result.plot("figures/"); result.save("runs/my_scan")

Any flax.linen module works: gzone initialises it with Xavier-normal kernels and zero biases, so
the Xavier radius r_X and the point conventions are defined for it. Each call takes its options
as keyword arguments (the command line's flags, same names), computes in memory unless given a
``run_dir`` (then it records and resumes there) and returns a result with named arrays.
"""

from gzone.options import OptionError
from gzone.runs.result import Result
from gzone.runs.stores import RunFolder
from gzone.studies.emergent_geometry import EmergentOptions, EmergentResult, emergent_geometry
from gzone.studies.init_selection import SelectionOptions, SelectionResult, init_selection
from gzone.studies.radius_dynamics import RadiusDynamicsOptions, RadiusDynamicsResult, radius_dynamics
from gzone.studies.radius_scan import ScanOptions, ScanResult, radius_scan
from gzone.studies.threshold_dimension import ThresholdOptions, ThresholdResult, threshold_dimension
from gzone.studies.train_subspace import TrainSubspaceOptions, TrainSubspaceResult, train_subspace
from gzone.studies.trajectories import TrajectoryOptions, TrajectoryResult, trajectories

__all__ = ["OptionError", "Result", "RunFolder",
           "EmergentOptions", "EmergentResult", "emergent_geometry",
           "RadiusDynamicsOptions", "RadiusDynamicsResult", "radius_dynamics",
           "ScanOptions", "ScanResult", "radius_scan",
           "SelectionOptions", "SelectionResult", "init_selection",
           "ThresholdOptions", "ThresholdResult", "threshold_dimension",
           "TrainSubspaceOptions", "TrainSubspaceResult", "train_subspace",
           "TrajectoryOptions", "TrajectoryResult", "trajectories"]
__version__ = "0.2.0"
