"""Teaching the model: fine-tuning datasets (Qwen3-VL's format), target replies, training."""
