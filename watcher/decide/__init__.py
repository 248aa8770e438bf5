"""Pure decisions and the plain data they take: what to do (`plan`), whether a rollout is done (`rollout`,
after kubectl), when to retry (`retry`), who may reach a model (`network`), which runtime serves it
(`runtimes`), whether live inputs drifted (`drift`: PSI and the verdict), how a candidate on live traffic
fares (`progressive`: hold, step, promote or roll back), the data types (`types`).
No I/O library may be imported here (import-linter); only `watcher.errors` and the shared
`model_wrapper.contract`."""
