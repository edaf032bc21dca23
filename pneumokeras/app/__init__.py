"""The Streamlit web app: the page and its logic."""
