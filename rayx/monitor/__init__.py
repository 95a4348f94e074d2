"""The monitor, a head service (DESIGN.md §2): it decides when a node is dead
(``rayx.monitor.nodes``) and what the cluster does about what lived there
(``rayx.monitor.recovery``). It runs inside the head raylet's event loop, as
the global scheduler does, and keeps no state the GCS does not have: a new
head finds the dead nodes marked in the ``nodes`` table."""
