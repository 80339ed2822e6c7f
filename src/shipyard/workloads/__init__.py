"""Built-in workloads (pretrain, finetune, serve, playground): runnable anywhere torchrun or python runs,
with nothing else of Shipyard imported — they must work unchanged inside a container on a cluster."""
