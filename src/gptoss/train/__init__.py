"""Training: full-parameter training and fine-tuning of gpt-oss models on harmony conversations."""
