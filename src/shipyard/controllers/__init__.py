"""Level-triggered controllers: compare what a resource asks for with what the runtime reports, act, and
write status once. They reach storage and runtimes only through `shipyard.store.protocol` and
`shipyard.runtime.protocol`, so the same code runs in the embedded daemon and in the cluster operator."""
