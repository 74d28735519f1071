# kvserver/kvserver.mk: filled by its module
