"""Membership inference: the loss attack (Yeom et al. 2018), LiRA (Carlini et al. 2022) and
RMIA (Zarifzadeh et al. 2024), their scores from a model's logits, and the metrics the field
reports (AUC, TPR at a low FPR)."""
