"""A sweep across hosts on Ray (``python -m bench sweep --cluster ADDRESS``).

The driver (the sweep) connects (``connect``), exports what is missing as a local sweep does, ships each export
once through Ray's object store (``artifacts``) and runs each cell as a Ray task on a node that offers the cell's
target and holds its one ``bench_slot`` (``placement``). On the node the task starts the cell in its own process
exactly as a local sweep does and returns the record (``node``); the driver alone appends records, retries a cell
whose node died once elsewhere, and records what could not run (``dispatch``).

The accuracy pass over shards (``python -m bench accuracy --cluster ADDRESS``) places its shards the same way and
merges their per-image results (``shards``).

Nothing outside this package imports Ray, and the sweep and the accuracy pass import this package only when
asked for a cluster.
"""
