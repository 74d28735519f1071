# worker/worker.mk: filled by its module
