# tests/tests.mk: filled by its module
