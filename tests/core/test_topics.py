# Topic names (docs/protocol.md#topics): plain, and AWS basic-ingest rules by suffix.
from rainmaker import topics

# The SDK's basic-ingest rules (esp_rmaker_mqtt_topics.h).
RULES = {
    "config": "esp_node_config",
    "params/local/init": "esp_init_params",
    "params/local": "esp_set_params",
    "alert": "esp_node_alert",
    "user/mapping": "esp_user_node_mapping",
    "otafetch": "esp_node_otafetch",
    "otastatus": "esp_node_otastatus",
    "tsdata": "esp_ts_ingest",
    "simple_tsdata": "esp_simple_ts_ingest",
    "from-node": "esp_cmd_resp",
}


def test_plain_topics():
    assert topics.sub("N1", "params/remote") == "node/N1/params/remote"
    for suffix in RULES:
        assert topics.pub("N1", suffix) == "node/N1/" + suffix


def test_ingest_topics_use_the_rule_of_each_suffix():
    for suffix, rule in RULES.items():
        assert topics.pub("N1", suffix, True) == "$aws/rules/%s/node/N1/%s" % (rule, suffix)
    assert topics.pub("N1", "unknown/suffix", True) == "node/N1/unknown/suffix"  # no rule: plain
