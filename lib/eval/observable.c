#include "internal.h"
int persiste_data_observable(persiste_data **out, const persiste_data *data, const persiste_model *model){(void)out;(void)data;(void)model;return persiste__error(PERSISTE_E_INVALID,"todo");}
