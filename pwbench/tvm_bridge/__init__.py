"""The only package that imports TVM (apache-tvm 0.27; its Python API moves between minor releases).

Importing this package imports nothing of TVM; its modules do: `compiler` (the full TVM: compute,
schedules, MetaSchedule) and `database` (tuning databases on disk, through the compiler)."""
