"""The HTTP layer: the app factory and thin endpoints (`app`), the predict endpoint that feeds the inference log
(`predict_endpoint`), ASGI guards (`guards`), the OpenAPI document (`openapi`), Swagger UI with local assets
(`swagger`), Prometheus metrics (`metrics`), the Open Inference Protocol routes (`v2_routes`). May import
predict, config, errors and contract; never loading (the server hands it a Predictor)."""
