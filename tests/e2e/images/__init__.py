"""End-to-end tests of the container images, built and run with buildah."""
