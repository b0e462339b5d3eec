"""Developer scripts the Makefile calls (code generation, the version check); never imported by
the product."""
