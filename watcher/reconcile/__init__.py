"""One reconcile pass: `engine` plans and runs it, `actions` performs each planned action, `gate` evaluates a
version before it takes traffic, `record` writes the outcome as tags, `progressive` steps a candidate
on live traffic (shadow or canary), `drift` measures a
version's inference log against its reference data, `ports` names what the pass needs
from outside (Protocols), `deps` wires the collaborators. May import targets, clients, render, config,
decide and errors; imported only by `entry`."""
