"""Readers of weights made elsewhere: Hugging Face GPT-2 checkpoints
(`gpt2`), PyTorch `.pth`/`.bin` files without torch (`torch_files`)."""
