"""The random-graph generator lives in the package (graphc/fuzz/graphs.py), where the
differential fuzzer uses it too; tests import it from here as before."""
from graphc.fuzz.graphs import *  # noqa: F401,F403
from graphc.fuzz.graphs import Ctx, generic_proposal  # noqa: F401  (not in __all__)
