/*
 * FireLink's mosquitto plugin: on the mutual-TLS listener the username a client sends must be
 * its certificate's CN, and the password is still checked by the password file. A device's
 * login then needs both of its factors: its certificate (key) and its password. A stolen box's
 * certificate with another account's username is refused at CONNECT instead of quietly becoming
 * its own account (docs/threat-model.md).
 *
 * mosquitto 2.0 asks each BASIC_AUTH callback in the order they were registered; plugins are
 * registered before `password_file`'s own check (src/mosquitto.c: module init, then security
 * init; a reload re-registers only the password file, after us). A callback answering anything
 * but MOSQ_ERR_PLUGIN_DEFER ends the check with that answer, so this plugin refuses a mismatch
 * and defers everything else to the password file:
 *   - no client certificate (the plain listener; the TLS listener has `require_certificate`): defer;
 *   - certificate without exactly one CN, or a CN with an embedded NUL: refuse;
 *   - no username, or a username other than the CN: refuse;
 *   - username == CN: defer (the password file decides).
 * mosquitto also runs this check for every connected client on a reload (SIGHUP), so a
 * revoked or rotated account is dropped as before.
 *
 * Built by `make plugin` (Makefile) into build/; firelink.site.broker copies it into the broker's
 * state directory and names it in mosquitto.conf (`plugin`).
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <openssl/objects.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define TAG "fl_certbind"

static mosquitto_plugin_id_t *plugin_id;

/* The certificate's single CN, NUL-terminated in `out`; false if there is none, more than one,
 * one with an embedded NUL, or one longer than `cap - 1` bytes. */
static bool single_cn(X509 *cert, char *out, size_t cap)
{
	X509_NAME *name = X509_get_subject_name(cert);
	if(name == NULL){
		return false;
	}
	int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if(i < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0){
		return false;
	}
	ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
	if(data == NULL){
		return false;
	}
	int len = ASN1_STRING_length(data);
	const unsigned char *bytes = ASN1_STRING_get0_data(data);
	if(len < 0 || bytes == NULL || (size_t)len >= cap || memchr(bytes, '\0', (size_t)len) != NULL){
		return false;
	}
	memcpy(out, bytes, (size_t)len);
	out[len] = '\0';
	return true;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	(void)event;
	(void)userdata;

	X509 *cert = mosquitto_client_certificate(ed->client);  /* a new reference, or NULL */
	if(cert == NULL){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	/* Account names are at most 64 characters (firelink.site.broker); anything longer is no account. */
	char cn[128];
	bool have_cn = single_cn(cert, cn, sizeof(cn));
	X509_free(cert);

	const char *username = ed->username;
	const char *addr = mosquitto_client_address(ed->client);
	if(!have_cn){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, TAG ": refused %s: its certificate has no single usable CN",
				addr ? addr : "?");
		return MOSQ_ERR_AUTH;
	}
	if(username == NULL || strcmp(username, cn) != 0){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, TAG ": refused %s: username '%s' is not its certificate's CN '%s'",
				addr ? addr : "?", username ? username : "(none)", cn);
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	if(option_count != 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, TAG ": takes no plugin_opt_ options");
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
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
}
