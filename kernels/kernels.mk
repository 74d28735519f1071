# kernels/kernels.mk: filled by its module
