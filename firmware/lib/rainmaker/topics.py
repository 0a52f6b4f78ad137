# MQTT topic names (docs/protocol.md#topics).
#
# The node subscribes to plain "node/<id>/<suffix>" topics. It publishes
# either to the same plain form (a plain broker such as Mosquitto) or to AWS
# IoT basic-ingest topics "$aws/rules/<rule>/node/<id>/<suffix>" (the
# RainMaker cloud), chosen by the "topics" key of rainmaker.json.

# suffix, rule: pairs of words. Made into a dict on first use, so a node on a
# plain broker never holds it.
_PAIRS = ("config esp_node_config params/local/init esp_init_params params/local esp_set_params "
          "alert esp_node_alert user/mapping esp_user_node_mapping otafetch esp_node_otafetch "
          "otastatus esp_node_otastatus tsdata esp_ts_ingest simple_tsdata esp_simple_ts_ingest "
          "from-node esp_cmd_resp")
_rules = None


def sub(node_id, suffix):
    return "node/%s/%s" % (node_id, suffix)


def pub(node_id, suffix, ingest=False):
    rule = None
    if ingest:
        global _rules
        if _rules is None:
            w = _PAIRS.split()
            _rules = dict(zip(w[::2], w[1::2]))
        rule = _rules.get(suffix)
    if rule:
        return "$aws/rules/%s/node/%s/%s" % (rule, node_id, suffix)
    return "node/%s/%s" % (node_id, suffix)
