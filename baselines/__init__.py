"""Meta-learning baselines, one per file, all behind the Learner protocol of ``iclkit.learners``.

Every baseline scores frozen text embeddings (``iclkit.embeddings``) and is registered by name on import:
protonet, protonet-proj, maml, fomaml, mann, transformer, knn, linear.
"""
