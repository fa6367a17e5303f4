"""Adversarial attacks on the models, through Foolbox 3.3.4, and their evaluation.

``losses``           attack objectives (the paper's MSE, cross-entropy, C&W margin)
``foolbox_attacks``  Foolbox PGD / FGSM with a choice of loss; a PGD that records its steps
``evaluate``         :func:`evaluate_attack` (model-agnostic: a Foolbox model to craft inputs, a
                     ``predict`` function to judge them) and :func:`check_rows`
``suite``            the seed paper's attacks plus a strong evaluation, with checks and evidence
``spiking``          the spiking network's suite: surrogate white-box, hybrid, EOT hybrid, Square,
                     decision-based attacks, scored under frozen and fresh noise
``experiment``       one attacked training run, one run folder (what ``cereb attack`` and
                     ``cereb study`` call)

Foolbox is imported when these modules are, so ``import attacks`` itself stays cheap.
"""
