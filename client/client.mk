# client/client.mk: filled by its module
