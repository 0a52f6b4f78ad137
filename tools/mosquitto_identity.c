/*
 * Mosquitto 2.0 plugin for the local RainMaker cloud (built by tools/broker.py).
 *
 * The identity of a client is the CN of its verified client certificate: it
 * becomes the MQTT username (the ACL file's %u), whatever username the client
 * sent. A node may only connect with client id == CN, as with the RainMaker
 * cloud's AWS IoT policy; otherwise the CONNECT is refused (CONNACK "not
 * authorised") before the broker looks up the session, so a node cannot take
 * over another node's session or trigger its will. The privileged identity
 * (plugin_opt_privileged_identity, the console) may use any client id.
 *
 * Mosquitto skips authentication plugins when use_identity_as_username is set,
 * so the generated config leaves that option off and this plugin does its job.
 */
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id;
static char *privileged;

/* The certificate's only CN as a new string, or NULL (none, several, or with a NUL). */
static char *certificate_cn(const struct mosquitto *client)
{
	X509 *cert = mosquitto_client_certificate(client);
	X509_NAME *name;
	ASN1_STRING *data = NULL;
	char *cn = NULL;
	int i, len;

	if(cert == NULL){
		return NULL;
	}
	name = X509_get_subject_name(cert);
	i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
	if(i >= 0 && X509_NAME_get_index_by_NID(name, NID_commonName, i) < 0){
		data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
	}
	if(data != NULL){
		len = ASN1_STRING_length(data);
		if(len > 0 && memchr(ASN1_STRING_get0_data(data), 0, (size_t)len) == NULL){
			cn = mosquitto_malloc((size_t)len + 1);
			if(cn != NULL){
				memcpy(cn, ASN1_STRING_get0_data(data), (size_t)len);
				cn[len] = '\0';
			}
		}
	}
	X509_free(cert);
	return cn;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	const char *address = mosquitto_client_address(ed->client);
	char *cn = certificate_cn(ed->client);
	int rc = MOSQ_ERR_AUTH;

	(void)event;
	(void)userdata;
	if(cn == NULL){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"identity: refused client %s from %s: no single common name in its certificate",
				client_id ? client_id : "", address ? address : "?");
	}else if(strcmp(cn, privileged) != 0 && (client_id == NULL || strcmp(cn, client_id) != 0)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"identity: refused client id '%s' from %s: certificate CN '%s' may only connect as '%s'",
				client_id ? client_id : "", address ? address : "?", cn, cn);
	}else if(mosquitto_set_username(ed->client, cn) == MOSQ_ERR_SUCCESS){
		rc = MOSQ_ERR_SUCCESS;
	}
	mosquitto_free(cn);
	return rc;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int i;

	(void)userdata;
	for(i = 0; i < option_count; i++){
		if(strcmp(options[i].key, "privileged_identity") == 0 && options[i].value[0] != '\0'){
			mosquitto_free(privileged);
			privileged = mosquitto_strdup(options[i].value);
		}
	}
	if(privileged == NULL){
		mosquitto_log_printf(MOSQ_LOG_ERR, "identity: plugin_opt_privileged_identity is required");
		return MOSQ_ERR_INVAL;
	}
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	if(plugin_id != NULL){
		mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	}
	mosquitto_free(privileged);
	privileged = NULL;
	return MOSQ_ERR_SUCCESS;
}
