"""Gemini (AI Studio) wire format: generateContent, its stream and Google errors."""
