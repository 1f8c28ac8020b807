"""The audit log (Merkle tree, checkpoints, proofs, verifier) and disclosure reports."""
