"""Several replicas of the daemon sharing one Redis act as one monitor.

* ``membership`` — each replica's lease in Redis (one Lua script per heartbeat);
* ``view`` — who holds a share at a given instant (pure);
* ``rendezvous`` — who gets a key, from the same member list everywhere (pure);
* ``placement`` — which checks this replica probes and which integrations it owns (``Solo`` when alone);
* ``replica`` — the heartbeat loop and the failure rules (Redis down, a paused process);
* ``grid`` — check timetables every replica computes alike;
* ``streams``, ``result_codec`` — results travelling to their integration's owner;
* ``orphans`` — a crashed owner's unread results, drained by its integrations' new owners.

How the daemon uses them is ``monitor.cluster_runtime``; README, "Running several replicas", for users.
"""
