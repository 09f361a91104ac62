"""The Streamlit dashboard: reads everything from the API (LAB_API_URL), nothing from Kafka or S3."""
