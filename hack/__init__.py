"""Developer scripts the Makefile calls (code generation); never imported by the product."""
