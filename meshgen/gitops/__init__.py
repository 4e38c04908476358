"""The GitOps half of meshgen: environment repository, forges and the pull-request lifecycle."""
