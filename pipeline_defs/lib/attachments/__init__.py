"""Attachments: the downloader and what guards it (URL safety, file types, circuit breakers, a
byte budget for temporary files), the file stores (OneLake, Blob, local) and the inventory sink."""
