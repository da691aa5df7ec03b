"""Op registry: one module per op family; importing them registers the ops."""
from .base import Deduplicator, Filter, Mapper, Op, build_op, register, registered_ops  # noqa: F401
