"""Adversarial attacks on the models, through Foolbox 3.3.4, and their evaluation.

``losses``           attack objectives (the paper's MSE, cross-entropy, C&W margin)
``foolbox_attacks``  Foolbox PGD / FGSM with a choice of loss; a PGD that records its steps
``evaluate``         :func:`evaluate_attack` (model-agnostic: a Foolbox model to craft inputs, a
                     ``predict`` function to judge them) and :func:`check_rows`
``suite``            the seed paper's attacks plus a strong evaluation, with checks and evidence

Foolbox is imported when these modules are, so ``import attacks`` itself stays cheap.
"""
