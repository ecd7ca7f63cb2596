"""Op definitions, one module per family; importing this package registers them all."""
from . import elementwise, reduction, layout, contraction  # noqa: F401
from . import conv, pool, softmax, norm, window  # noqa: F401
from . import winograd  # noqa: F401
