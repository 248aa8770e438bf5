"""`python -m model_wrapper evaluate`: the evaluation gate's Job (`job`) and its batched scoring
(`scoring`). May import loading, predict, config, errors and contract."""
