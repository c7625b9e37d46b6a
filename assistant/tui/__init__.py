"""The Textual dashboard (`assistant dashboard`): app.py draws, board.py adds records up, sources.py reads them."""
