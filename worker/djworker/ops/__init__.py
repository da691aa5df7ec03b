"""Op registry: one module per op family; importing them registers the ops."""
from .base import Deduplicator, Filter, GlobalOp, Mapper, Op, Selector, register  # noqa: F401
from .catalog import MODEL_OPS, build_op, registered_ops  # noqa: F401
